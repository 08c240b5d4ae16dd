//! Fraud alerts: rings of cards linked by shared devices, with their active spend.
//!
//! Input: topic `payments`, JSON values
//! `{"ts","payment","card","device","merchant","amount_cents"}`.
//! - A payment is *active* from its dataflow time `t` until `t + 1 hour`: it is inserted at `t`
//!   and retracted at `t + 3,600,000` (a window by retraction, exact at every timestamp).
//! - Cards are linked when active payments share a device; a *ring* is a connected component of
//!   cards (computed by iteration to a fixpoint), labelled by its smallest card id.
//! - Output `{"ring","cards","devices","amount_cents"}` for every ring with at least 3 cards and at
//!   least 100,000 active cents. Integer arithmetic throughout.
//! - Amounts come from outside and are bounded by [`MAX_AMOUNT_CENTS`], checked by [`decode`], so
//!   the sums the dataflow keeps cannot overflow.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use differential_dataflow::operators::iterate::Iterate;
use kappa_engine::{
    ClusterConfig, Collection, Diff, Input, InputInfo, Inputs, JobOptions, JobReport, Pipeline, Record, Retention,
    Sink, SourceFactory, Sources,
};
use serde::{Deserialize, Serialize};

use crate::decode::{json, DecodeError};

/// The input's name in the pipeline.
pub const INPUT: &str = "payments";
/// How long a payment stays active, ms.
pub const WINDOW_MS: u64 = 3_600_000;
/// Least number of cards of an alerting ring.
pub const MIN_CARDS: u64 = 3;
/// Least active spend of an alerting ring, cents.
pub const MIN_CENTS: u64 = 100_000;
/// Largest amount of one payment [`decode`] accepts, cents: `u32::MAX` (about 42.9 million
/// dollars); a larger one is a bad record.
///
/// The bound is what keeps the dataflow exact: a ring's active spend is summed in [`Diff`] (64
/// bits), and with every amount below 2^32 that sum cannot overflow while fewer than 2^31 payments
/// are active in one ring at once (2^31 · 2^32 = 2^63).
pub const MAX_AMOUNT_CENTS: u64 = u32::MAX as u64;

/// One payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Payment {
    /// Event time, ms.
    pub ts: u64,
    /// Payment id.
    pub payment: u64,
    /// Card used.
    pub card: u64,
    /// Device used.
    pub device: u64,
    /// Merchant paid.
    pub merchant: u64,
    /// Amount, cents.
    pub amount_cents: u64,
}

// Checkpoints may keep payments in abomonation's encoding: six plain integers, no pointers, no
// padding, every bit pattern valid, so the (default, no-op) implementation is exact.
impl abomonation::Abomonation for Payment {}

impl Payment {
    /// Checks the bounds the dataflow's arithmetic relies on: `amount_cents` at most
    /// [`MAX_AMOUNT_CENTS`]. The error names the field and its value.
    pub fn check(&self) -> Result<(), DecodeError> {
        if self.amount_cents > MAX_AMOUNT_CENTS {
            return Err(DecodeError::OutOfRange {
                field: "amount_cents",
                value: self.amount_cents,
                max: MAX_AMOUNT_CENTS,
                what: "amount in cents",
            });
        }
        Ok(())
    }
}

/// One alert row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ring {
    /// The ring's smallest card id.
    pub ring: u64,
    /// Cards in the ring.
    pub cards: u64,
    /// Distinct devices of the ring's active payments.
    pub devices: u64,
    /// Active spend of the ring's cards, cents.
    pub amount_cents: u64,
}

impl kappa_engine::Keyed for Ring {
    fn key(&self) -> serde_json::Value {
        serde_json::json!({ "ring": self.ring })
    }
}

/// Decodes a record's JSON value; the event time is its `ts`. A payment whose amount is beyond
/// [`MAX_AMOUNT_CENTS`] is rejected ([`Payment::check`]).
pub fn decode(record: &Record) -> Result<(Payment, u64), DecodeError> {
    let p: Payment = json(record, "payment")?;
    p.check()?;
    Ok((p, p.ts))
}

/// The dataflow: payments in, alerting rings out.
///
/// Every payment's amount must be at most [`MAX_AMOUNT_CENTS`], as [`decode`] ensures.
pub fn fraud_alerts(payments: Collection<'_, Payment>) -> Collection<'_, Ring> {
    // The window by retraction: every payment is retracted one hour after it arrived.
    let active = payments.clone().concat(payments.delay(|t| t.saturating_add(WINDOW_MS)).negate());

    let card_device = active.clone().map(|p| (p.device, p.card)).distinct();
    let links = card_device.clone().join_map(card_device.clone(), |_device, &a, &b| (a, b));
    let cards = card_device.clone().map(|(_device, card)| card).distinct();

    // Connected components: every card takes the smallest label among its linked cards, to a
    // fixpoint. A card is linked to itself through any device, so it keeps a label.
    let seeds = cards.clone().map(|c| (c, c));
    let labels = seeds.clone().iterate(|scope, inner| {
        let links = links.enter(scope);
        let seeds = seeds.enter(scope);
        inner
            .join_map(links, |_card, &label, &other| (other, label))
            .concat(seeds)
            .reduce(|_card, labels, out| out.push((*labels[0].0, 1)))
    });

    let ring_cards = labels.clone().map(|(_card, ring)| ring).count();
    let ring_devices = card_device
        .map(|(device, card)| (card, device))
        .join_map(labels.clone(), |_card, &device, &ring| (ring, device))
        .distinct()
        .map(|(ring, _device)| ring)
        .count();
    // The amount becomes the update's difference; `decode` bounds it (see `MAX_AMOUNT_CENTS`).
    let ring_cents = active
        .explode(|p| Some(((p.card, ()), Diff::try_from(p.amount_cents).expect("decode bounds amount_cents"))))
        .join_map(labels, |_card, &(), &ring| ring)
        .count();

    ring_cards.join(ring_devices).join(ring_cents).flat_map(|(ring, ((cards, devices), cents))| {
        let (cards, devices, cents) = (cards as u64, devices as u64, u64::try_from(cents).unwrap_or(0));
        (cards >= MIN_CARDS && cents >= MIN_CENTS).then_some(Ring { ring, cards, devices, amount_cents: cents })
    })
}

/// Runs fraud alerts over `payments` (read as input [`INPUT`]) into `sink`.
pub fn run<S: Sink<Ring>>(
    cluster: &ClusterConfig,
    options: JobOptions,
    payments: Arc<dyn SourceFactory>,
    sink: S,
) -> kappa_engine::Result<JobReport> {
    kappa_engine::pipeline::run(&FraudAlerts, cluster, options, Sources::new().with_shared(INPUT, payments), sink)
}

/// A payment record as an update: the payment, its time, +1.
pub fn decode_update(record: &Record) -> Result<(Payment, u64, Diff), DecodeError> {
    decode(record).map(|(payment, ts)| (payment, ts, 1))
}

/// The payments input. The pipeline looks back one window: a checkpoint keeps the last hour at
/// exact times.
pub const PAYMENTS: Input<Payment, DecodeError> = Input {
    name: INPUT,
    topic: INPUT,
    about: "JSON payments {ts, payment, card, device, merchant, amount_cents}",
    decode: decode_update,
    retention: Retention::Window { ms: WINDOW_MS },
};

/// Fraud alerts as a [`Pipeline`]: `kappa replay --pipeline fraud-alerts`.
#[derive(Clone, Copy, Debug, Default)]
pub struct FraudAlerts;

impl Pipeline for FraudAlerts {
    type Output = Ring;
    fn name(&self) -> &str {
        "fraud-alerts"
    }
    fn about(&self) -> &str {
        "rings of cards sharing devices, with their active spend over the last hour"
    }
    fn inputs(&self) -> Vec<InputInfo> {
        vec![PAYMENTS.info()]
    }
    fn output_about(&self) -> &str {
        "{ring, cards, devices, amount_cents}, keyed by ring"
    }
    fn build<'s>(&self, inputs: &mut Inputs<'s, '_>) -> kappa_engine::Result<Collection<'s, Ring>> {
        Ok(fraud_alerts(inputs.read(&PAYMENTS)?))
    }
}

/// The batch reference at time `at`: from `(time, payment)` records, the payments active at `at`
/// (`time <= at < time + 1 h`), their card components by union-find, and the alerting rings.
/// Payments that [`decode`] rejects ([`Payment::check`]) are left out, as the skip policy does.
pub fn reference_at(payments: &[(u64, Payment)], at: u64) -> BTreeSet<Ring> {
    let active: Vec<&Payment> = payments
        .iter()
        .filter(|(t, p)| *t <= at && at < t.saturating_add(WINDOW_MS) && p.check().is_ok())
        .map(|(_, p)| p)
        .collect();
    // Union-find over cards, joining cards that share a device.
    let mut parent: BTreeMap<u64, u64> = BTreeMap::new();
    fn find(parent: &mut BTreeMap<u64, u64>, x: u64) -> u64 {
        let p = *parent.entry(x).or_insert(x);
        if p == x {
            return x;
        }
        let root = find(parent, p);
        parent.insert(x, root);
        root
    }
    let mut first_card_of_device: BTreeMap<u64, u64> = BTreeMap::new();
    for p in &active {
        find(&mut parent, p.card);
        if let Some(&other) = first_card_of_device.get(&p.device) {
            let (a, b) = (find(&mut parent, p.card), find(&mut parent, other));
            let (lo, hi) = (a.min(b), a.max(b));
            parent.insert(hi, lo);
        } else {
            first_card_of_device.insert(p.device, p.card);
        }
    }
    let mut cards: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut devices: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    let mut cents: BTreeMap<u64, u64> = BTreeMap::new();
    for p in &active {
        let root = find(&mut parent, p.card);
        cards.entry(root).or_default().insert(p.card);
        devices.entry(root).or_default().insert(p.device);
        *cents.entry(root).or_default() += p.amount_cents;
    }
    cards
        .into_iter()
        .filter_map(|(root, members)| {
            let ring = *members.iter().next().expect("a component has a card");
            let ring = Ring {
                ring,
                cards: members.len() as u64,
                devices: devices[&root].len() as u64,
                amount_cents: cents[&root],
            };
            (ring.cards >= MIN_CARDS && ring.amount_cents >= MIN_CENTS).then_some(ring)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pay(ts: u64, card: u64, device: u64, amount_cents: u64) -> (u64, Payment) {
        (ts, Payment { ts, payment: ts, card, device, merchant: 1, amount_cents })
    }

    #[test]
    fn reference_finds_a_ring_while_its_payments_are_active() {
        let payments = vec![
            pay(0, 5, 100, 40_000),
            pay(1_000, 7, 100, 40_000),
            pay(2_000, 7, 200, 10_000),
            pay(3_000, 9, 200, 20_000),
            pay(4_000, 11, 300, 99_000), // its own component
        ];
        let ring = Ring { ring: 5, cards: 3, devices: 2, amount_cents: 110_000 };
        assert_eq!(reference_at(&payments, 3_000), BTreeSet::from([ring]));
        assert!(reference_at(&payments, 2_000).is_empty(), "two cards only");
        // The first payment expires at 3,600,000: card 5 leaves, the rest is too small.
        assert!(reference_at(&payments, WINDOW_MS).is_empty());
    }

    fn record(value: &str) -> Record {
        Record { offset: 0, timestamp: None, key: None, value: Some(bytes::Bytes::copy_from_slice(value.as_bytes())) }
    }

    fn payment_json(amount_cents: &str) -> String {
        format!(r#"{{"ts":1,"payment":2,"card":3,"device":4,"merchant":5,"amount_cents":{amount_cents}}}"#)
    }

    #[test]
    fn amounts_beyond_the_bound_are_rejected_naming_the_field() {
        for amount in [u64::MAX, i64::MAX as u64 + 1, MAX_AMOUNT_CENTS + 1] {
            let reason = decode(&record(&payment_json(&amount.to_string()))).expect_err("rejected").to_string();
            assert!(reason.contains("amount_cents") && reason.contains(&amount.to_string()), "{reason}");
        }
        for bad in ["-1", "18446744073709551616", "1.5"] {
            assert!(decode(&record(&payment_json(bad))).is_err(), "amount {bad} is rejected");
        }
        let (p, ts) = decode(&record(&payment_json(&MAX_AMOUNT_CENTS.to_string()))).expect("the bound itself decodes");
        assert_eq!((p.amount_cents, ts), (MAX_AMOUNT_CENTS, 1));
    }

    #[test]
    fn reference_leaves_out_what_the_decoder_rejects() {
        let payments = vec![
            pay(0, 5, 100, 40_000),
            pay(1_000, 7, 100, 40_000),
            pay(2_000, 9, 100, 40_000),
            pay(3_000, 11, 100, u64::MAX),
        ];
        let ring = Ring { ring: 5, cards: 3, devices: 1, amount_cents: 120_000 };
        assert_eq!(reference_at(&payments, 3_000), BTreeSet::from([ring]));
    }

    #[test]
    fn largest_amounts_sum_exactly_in_the_dataflow() {
        use kappa_engine::{MemorySink, MemorySource, PartitionId};
        // Three cards on one device, each paying the largest amount twice: 6 · (2^32 − 1) cents,
        // past u32 and past what an `as` cast of a wrapped sum would give.
        let payments: Vec<(u64, Payment)> = (0..6).map(|i| pay(1_000 * i, 5 + i % 3, 100, MAX_AMOUNT_CENTS)).collect();
        let records: Vec<Record> = payments
            .iter()
            .enumerate()
            .map(|(i, (_, p))| Record {
                offset: i as i64,
                timestamp: None,
                key: None,
                value: Some(bytes::Bytes::from(serde_json::to_vec(p).expect("serializes"))),
            })
            .collect();
        let source = MemorySource::new(vec![(PartitionId::new(INPUT, 0), records)]);
        let sink = MemorySink::new();
        run(&ClusterConfig::threads(1), JobOptions::default(), Arc::new(source), sink.clone()).expect("runs");
        // The ring at time 5,000, when all six payments are active (they expire an hour later).
        let mut at: BTreeMap<Ring, Diff> = BTreeMap::new();
        for (ring, _, diff) in sink.updates().into_iter().filter(|(_, t, _)| *t <= 5_000) {
            *at.entry(ring).or_default() += diff;
        }
        let got: BTreeSet<Ring> = at
            .into_iter()
            .filter(|(_, d)| *d != 0)
            .map(|(r, d)| {
                assert_eq!(d, 1, "{r:?} once");
                r
            })
            .collect();
        let ring = Ring { ring: 5, cards: 3, devices: 1, amount_cents: 6 * MAX_AMOUNT_CENTS };
        assert_eq!(got, BTreeSet::from([ring]));
        assert_eq!(reference_at(&payments, 5_000), BTreeSet::from([ring]));
    }
}
