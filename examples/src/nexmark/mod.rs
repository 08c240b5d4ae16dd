//! Nexmark queries q0–q8 as Kappa pipelines, with plain-Rust references.
//!
//! The definitions are those of the Nexmark suites of Apache Beam and Flink (Flink's SQL texts
//! are quoted on each query). Windows are on the events' own `date_time` and are *data*, not
//! dataflow time: every window's result is part of the output collection, maintained exactly as
//! events arrive, late or not. Two deviations keep arithmetic exact (invariant 2): q1 converts to
//! euros as `price · 908 / 1000` in integers, and averages (q4, q6) are integer divisions.
//! Prices come from outside and are bounded by [`MAX_PRICE`], checked by [`decode`], so that no
//! product or sum of them in the queries can overflow.
//!
//! Input: one topic of JSON [`Event`]s, `{"Person":{...}}`, `{"Auction":{...}}` or `{"Bid":{...}}`,
//! each with its `date_time` (ms) as event time; [`generate`] produces them with the `nexmark`
//! crate's generator.

use std::collections::BTreeMap;
use std::sync::Arc;

use kappa_engine::{
    execute, ClusterConfig, Collection, Diff, Input, InputInfo, Inputs, JobOptions, JobReport, Pipeline, Record,
    Retention, Sink, SourceFactory, Sources,
};
use serde::{Deserialize, Serialize};

use crate::decode::{json, DecodeError};

// One file per query: its dataflow, its batch reference and its test.
mod max;
mod q0;
mod q1;
mod q2;
mod q3;
mod q4;
mod q5;
mod q6;
mod q7;
mod q8;
pub use q0::q0;
pub use q1::q1;
pub use q2::q2;
pub use q3::q3;
pub use q4::q4;
pub use q5::q5;
pub use q6::q6;
pub use q7::q7;
pub use q8::q8;

/// The input's name in the pipelines.
pub const INPUT: &str = "nexmark";
/// Window length of q5, q7 and q8, ms.
pub const WINDOW_MS: u64 = 10_000;
/// Slide of q5's hopping windows, ms.
pub const SLIDE_MS: u64 = 2_000;
/// Largest bid price [`decode`] accepts, cents: `u32::MAX` (about 42.9 million dollars); a bid
/// above it is a bad record. (The generator's prices stay below 10^8.)
///
/// The bound is what keeps the queries exact: q1's `price · 908` stays below 2^42, q6's sum of ten
/// final prices below 2^36, and q4's per-category sum of final prices, kept in a 64-bit
/// [`Diff`](kappa_engine::Diff), cannot overflow while a category has fewer than 2^31 auctions
/// (2^31 · 2^32 = 2^63).
pub const MAX_PRICE: u64 = u32::MAX as u64;

/// A person registers.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Person {
    /// Person id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// City.
    pub city: String,
    /// US state, lowercase.
    pub state: String,
    /// Event time, ms.
    pub date_time: u64,
}

/// An auction opens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Auction {
    /// Auction id.
    pub id: u64,
    /// The seller (a person id).
    pub seller: u64,
    /// Category.
    pub category: u64,
    /// Initial bid.
    pub initial_bid: u64,
    /// Reserve price.
    pub reserve: u64,
    /// Event time, ms.
    pub date_time: u64,
    /// When the auction closes, ms.
    pub expires: u64,
}

/// A bid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bid {
    /// The auction.
    pub auction: u64,
    /// The bidder (a person id).
    pub bidder: u64,
    /// Price, cents.
    pub price: u64,
    /// Event time, ms.
    pub date_time: u64,
}

/// One Nexmark event.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Event {
    /// A person.
    Person(Person),
    /// An auction.
    Auction(Auction),
    /// A bid.
    Bid(Bid),
}

impl Event {
    /// Checks the bounds the queries' arithmetic relies on: a bid's `price` at most
    /// [`MAX_PRICE`]. The error names the field and its value.
    pub fn check(&self) -> Result<(), DecodeError> {
        match self {
            Event::Bid(b) if b.price > MAX_PRICE => {
                Err(DecodeError::OutOfRange { field: "price", value: b.price, max: MAX_PRICE, what: "price in cents" })
            }
            _ => Ok(()),
        }
    }

    /// The event's time, ms.
    pub fn date_time(&self) -> u64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

/// `n` events of the `nexmark` crate's generator at its default rate (10,000 events/s of event
/// time), deterministic: the base time is fixed.
pub fn generate(n: usize) -> Vec<Event> {
    generate_at(n, 10_000)
}

/// `n` events at `per_second` events per second of event time.
pub fn generate_at(n: usize, per_second: usize) -> Vec<Event> {
    let config = nexmark::config::NexmarkConfig {
        base_time: 1_700_000_000_000,
        first_rate: per_second,
        next_rate: per_second,
        ..Default::default()
    };
    nexmark::EventGenerator::new(config)
        .take(n)
        .map(|event| match event {
            nexmark::event::Event::Person(p) => Event::Person(Person {
                id: p.id as u64,
                name: p.name,
                city: p.city,
                state: p.state,
                date_time: p.date_time,
            }),
            nexmark::event::Event::Auction(a) => Event::Auction(Auction {
                id: a.id as u64,
                seller: a.seller as u64,
                category: a.category as u64,
                initial_bid: a.initial_bid as u64,
                reserve: a.reserve as u64,
                date_time: a.date_time,
                expires: a.expires,
            }),
            nexmark::event::Event::Bid(b) => Event::Bid(Bid {
                auction: b.auction as u64,
                bidder: b.bidder as u64,
                price: b.price as u64,
                date_time: b.date_time,
            }),
        })
        .collect()
}

/// Decodes a record's JSON event; its event time is its `date_time`. A bid priced beyond
/// [`MAX_PRICE`] is rejected ([`Event::check`]).
pub fn decode(record: &Record) -> Result<(Event, u64), DecodeError> {
    let event: Event = json(record, "nexmark event")?;
    event.check()?;
    let time = event.date_time();
    Ok((event, time))
}

/// The three streams of an event collection.
pub struct Streams<'s> {
    /// Persons.
    pub persons: Collection<'s, Person>,
    /// Auctions.
    pub auctions: Collection<'s, Auction>,
    /// Bids.
    pub bids: Collection<'s, Bid>,
}

/// Splits events by kind.
pub fn split(events: Collection<'_, Event>) -> Streams<'_> {
    Streams {
        persons: events.clone().flat_map(|e| if let Event::Person(p) = e { Some(p) } else { None }),
        auctions: events.clone().flat_map(|e| if let Event::Auction(a) = e { Some(a) } else { None }),
        bids: events.flat_map(|e| if let Event::Bid(b) = e { Some(b) } else { None }),
    }
}

/// The queries, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Query {
    /// Pass-through.
    Q0,
    /// Currency conversion.
    Q1,
    /// Selection.
    Q2,
    /// Local item suggestion.
    Q3,
    /// Average price for a category.
    Q4,
    /// Hot items.
    Q5,
    /// Average selling price by seller.
    Q6,
    /// Highest bid.
    Q7,
    /// Monitor new users.
    Q8,
}

impl Query {
    /// All queries.
    pub const ALL: [Query; 9] =
        [Query::Q0, Query::Q1, Query::Q2, Query::Q3, Query::Q4, Query::Q5, Query::Q6, Query::Q7, Query::Q8];
}

/// Every query's output rows as one type: the query's columns, in order, as integers or strings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// An integer column.
    Int(u64),
    /// A text column.
    Text(String),
}

/// One output row.
pub type Row = Vec<Value>;

/// Builds `query` over `events`, whose bids' prices must be at most [`MAX_PRICE`] (as [`decode`]
/// ensures).
pub fn query<'s>(query: Query, events: Collection<'s, Event>) -> Collection<'s, Row> {
    let s = split(events);
    match query {
        Query::Q0 => q0(s.bids),
        Query::Q1 => q1(s.bids),
        Query::Q2 => q2(s.bids),
        Query::Q3 => q3(s.persons, s.auctions),
        Query::Q4 => q4(s.auctions, s.bids),
        Query::Q5 => q5(s.bids),
        Query::Q6 => q6(s.auctions, s.bids),
        Query::Q7 => q7(s.bids),
        Query::Q8 => q8(s.persons, s.auctions),
    }
}

/// Runs `q` over the input [`INPUT`] into `sink`.
pub fn run<S: Sink<Row>>(
    cluster: &ClusterConfig,
    options: JobOptions,
    q: Query,
    events: Arc<dyn SourceFactory>,
    sink: S,
) -> kappa_engine::Result<JobReport> {
    execute(cluster, options, Sources::new().with_shared(INPUT, events), move |ctx| {
        let events = ctx.input(INPUT, decode)?;
        ctx.output(query(q, events), sink.clone());
        Ok(())
    })
}

/// A Nexmark event record as an update: the event, its `date_time`, +1.
pub fn decode_update(record: &Record) -> Result<(Event, u64, Diff), DecodeError> {
    decode(record).map(|(event, ts)| (event, ts, 1))
}

/// The events input. (Events hold strings and have no abomonation encoding, so they are read
/// as a transient input: a Nexmark job runs without checkpoints.)
pub const EVENTS: Input<Event, DecodeError> = Input {
    name: INPUT,
    topic: INPUT,
    about: "JSON Nexmark events {\"Person\"|\"Auction\"|\"Bid\": {...}}",
    decode: decode_update,
    retention: Retention::Collapse,
};

/// A query's output row, keyed by the whole row (a query's rows form a set).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QueryRow(pub Row);

impl kappa_engine::Keyed for QueryRow {
    fn key(&self) -> serde_json::Value {
        serde_json::to_value(&self.0).unwrap_or(serde_json::Value::Null)
    }
}

/// One Nexmark query as a [`Pipeline`]: `kappa replay --pipeline nexmark-q3`.
#[derive(Clone, Copy, Debug)]
pub struct NexmarkQuery(pub Query);

/// Every query as a pipeline, q0 to q8.
pub static PIPELINES: [NexmarkQuery; 9] = [
    NexmarkQuery(Query::Q0),
    NexmarkQuery(Query::Q1),
    NexmarkQuery(Query::Q2),
    NexmarkQuery(Query::Q3),
    NexmarkQuery(Query::Q4),
    NexmarkQuery(Query::Q5),
    NexmarkQuery(Query::Q6),
    NexmarkQuery(Query::Q7),
    NexmarkQuery(Query::Q8),
];

impl Pipeline for NexmarkQuery {
    type Output = QueryRow;
    fn name(&self) -> &str {
        match self.0 {
            Query::Q0 => "nexmark-q0",
            Query::Q1 => "nexmark-q1",
            Query::Q2 => "nexmark-q2",
            Query::Q3 => "nexmark-q3",
            Query::Q4 => "nexmark-q4",
            Query::Q5 => "nexmark-q5",
            Query::Q6 => "nexmark-q6",
            Query::Q7 => "nexmark-q7",
            Query::Q8 => "nexmark-q8",
        }
    }
    fn about(&self) -> &str {
        match self.0 {
            Query::Q0 => "Nexmark q0: pass-through of bids",
            Query::Q1 => "Nexmark q1: bids converted to euros",
            Query::Q2 => "Nexmark q2: bids of auctions whose id is a multiple of 123",
            Query::Q3 => "Nexmark q3: local item suggestion",
            Query::Q4 => "Nexmark q4: per category, the average final price of its auctions",
            Query::Q5 => "Nexmark q5: per hopping window (10 s every 2 s), the auctions with the most bids",
            Query::Q6 => "Nexmark q6: per seller, the average of its last ten final prices",
            Query::Q7 => "Nexmark q7: per tumbling 10 s window, the highest bids",
            Query::Q8 => "Nexmark q8: persons who opened an auction in the 10 s window they registered in",
        }
    }
    fn inputs(&self) -> Vec<InputInfo> {
        vec![EVENTS.info()]
    }
    fn output_about(&self) -> &str {
        "the query's columns as a JSON array of {\"Int\": n} or {\"Text\": s}, keyed by the whole row"
    }
    fn build<'s>(&self, inputs: &mut Inputs<'s, '_>) -> kappa_engine::Result<Collection<'s, QueryRow>> {
        Ok(query(self.0, inputs.read_transient(&EVENTS)?).map(QueryRow))
    }
}

/// The batch reference: `query` over `events` in plain Rust, as a set of rows (row → count).
/// Events that [`decode`] rejects ([`Event::check`]) are left out, as the skip policy does.
pub fn reference(query: Query, events: &[Event]) -> BTreeMap<Row, i64> {
    let t = Tables::new(events);
    let rows = match query {
        Query::Q0 => q0::reference(&t),
        Query::Q1 => q1::reference(&t),
        Query::Q2 => q2::reference(&t),
        Query::Q3 => q3::reference(&t),
        Query::Q4 => q4::reference(&t),
        Query::Q5 => q5::reference(&t),
        Query::Q6 => q6::reference(&t),
        Query::Q7 => q7::reference(&t),
        Query::Q8 => q8::reference(&t),
    };
    let mut out: BTreeMap<Row, i64> = BTreeMap::new();
    for row in rows {
        *out.entry(row).or_default() += 1;
    }
    out
}

/// A run's events by kind, for the batch references: those [`decode`] accepts.
struct Tables<'a> {
    persons: Vec<&'a Person>,
    auctions: Vec<&'a Auction>,
    bids: Vec<&'a Bid>,
}

impl<'a> Tables<'a> {
    fn new(events: &'a [Event]) -> Self {
        let mut t = Tables { persons: Vec::new(), auctions: Vec::new(), bids: Vec::new() };
        for event in events.iter().filter(|e| e.check().is_ok()) {
            match event {
                Event::Person(p) => t.persons.push(p),
                Event::Auction(a) => t.auctions.push(a),
                Event::Bid(b) => t.bids.push(b),
            }
        }
        t
    }
}

fn int(v: u64) -> Value {
    Value::Int(v)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// The start of the tumbling [`WINDOW_MS`] window holding `t`.
pub fn tumble(t: u64) -> u64 {
    t - t % WINDOW_MS
}

/// The starts of the hopping windows (length [`WINDOW_MS`], slide [`SLIDE_MS`]) holding `t`.
pub fn hop_windows(t: u64) -> impl Iterator<Item = u64> {
    let last = t - t % SLIDE_MS;
    (0..WINDOW_MS / SLIDE_MS).filter_map(move |k| last.checked_sub(k * SLIDE_MS))
}

/// The events as records of one partition, JSON values, offsets in order.
pub fn records(events: &[Event]) -> Vec<Record> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| Record {
            offset: i as i64,
            timestamp: i64::try_from(e.date_time()).ok(),
            key: None,
            value: Some(bytes::Bytes::from(serde_json::to_vec(e).expect("events serialize"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kappa_engine::{MemorySink, MemorySource, PartitionId};

    /// `q`'s output equals its batch reference on one and two workers (each query's file runs it).
    pub(super) fn check(q: Query) {
        // 200 events/s: 25 s of event time, so windows open and close.
        let events = generate_at(5_000, 200);
        let span = events.last().map(Event::date_time).unwrap_or(0) - events[0].date_time();
        assert!(span > 2 * WINDOW_MS, "the events span several windows ({span} ms)");
        let expected = reference(q, &events);
        assert!(!expected.is_empty(), "{q:?}: the reference has rows on this input");
        for workers in [1, 2] {
            let source = MemorySource::new(vec![(PartitionId::new(INPUT, 0), records(&events))]).with_batch(97);
            let sink = MemorySink::new();
            run(&ClusterConfig::threads(workers), JobOptions::default(), q, Arc::new(source), sink.clone())
                .expect("the query runs");
            let got: BTreeMap<Row, i64> =
                sink.accumulated().into_iter().map(|(row, diff)| (row, diff as i64)).collect();
            assert_eq!(got, expected, "{q:?} on {workers} worker(s)");
        }
    }

    fn record(value: &str) -> Record {
        Record { offset: 0, timestamp: None, key: None, value: Some(bytes::Bytes::copy_from_slice(value.as_bytes())) }
    }

    fn bid_json(price: &str) -> String {
        format!(r#"{{"Bid":{{"auction":1,"bidder":2,"price":{price},"date_time":1700000000000}}}}"#)
    }

    #[test]
    fn prices_beyond_the_bound_are_rejected_naming_the_field() {
        for price in [u64::MAX, i64::MAX as u64 + 1, u64::MAX / 908 + 1, MAX_PRICE + 1] {
            let reason = decode(&record(&bid_json(&price.to_string()))).expect_err("rejected").to_string();
            assert!(reason.contains("price") && reason.contains(&price.to_string()), "{reason}");
        }
        for bad in ["-1", "18446744073709551616"] {
            assert!(decode(&record(&bid_json(bad))).is_err(), "price {bad} is rejected");
        }
        let (event, _) = decode(&record(&bid_json(&MAX_PRICE.to_string()))).expect("the bound itself decodes");
        assert!(matches!(event, Event::Bid(Bid { price: MAX_PRICE, .. })));
    }

    #[test]
    fn largest_prices_convert_and_average_exactly() {
        // Two auctions of one category, each sold at the largest price: q1 converts without
        // overflow and q4's average is the price itself (the sum is past 2^32).
        let auction =
            |id| Auction { id, seller: 9, category: 3, initial_bid: 1, reserve: 1, date_time: 0, expires: 10 };
        let bid = |auction| Bid { auction, bidder: 7, price: MAX_PRICE, date_time: 5 };
        let events = vec![
            Event::Auction(auction(1)),
            Event::Auction(auction(2)),
            Event::Bid(bid(1)),
            Event::Bid(bid(2)),
            Event::Bid(Bid { price: u64::MAX, ..bid(1) }), // rejected, left out by the reference
        ];
        let q1_rows = reference(Query::Q1, &events);
        assert_eq!(q1_rows.len(), 2, "one row per accepted bid");
        assert!(q1_rows.keys().all(|row| row[2] == int(MAX_PRICE * 908 / 1000)));
        assert_eq!(reference(Query::Q4, &events), BTreeMap::from([(vec![int(3), int(MAX_PRICE)], 1)]));
        for q in [Query::Q1, Query::Q4, Query::Q6] {
            let options = JobOptions { on_bad_record: kappa_engine::BadRecordPolicy::Skip, ..JobOptions::default() };
            let source = MemorySource::new(vec![(PartitionId::new(INPUT, 0), records(&events))]);
            let sink = MemorySink::new();
            let report =
                run(&ClusterConfig::threads(1), options, q, Arc::new(source), sink.clone()).expect("the query runs");
            assert_eq!(report.bad_records, 1, "{q:?}: the u64::MAX bid is skipped");
            let got: BTreeMap<Row, i64> =
                sink.accumulated().into_iter().map(|(row, diff)| (row, diff as i64)).collect();
            assert_eq!(got, reference(q, &events), "{q:?}");
        }
    }
}
