//! The peer engine: like counts and Nexmark q4 on DBSP (Feldera's engine, the `dbsp` crate),
//! fed the same records in the same rounds as the bare differential program of `overhead_bench`.
//!
//! Only built with the benches crate's `dbsp` feature: the crate pulls a few hundred dependencies.
//! Each round takes the next `batch` records of every partition, parses them on `workers` threads
//! (as the differential programs parse on their workers), appends them to DBSP's input handles and
//! runs one transaction; the output of every transaction (DBSP's accumulated output: a transaction
//! may take several steps) is read and folded into the final result,
//! which the caller compares with the batch reference so the peer is checked, not only timed.
//!
//! The circuits are DBSP's idiom for the same queries: `distinct` then `weighted_count` for like
//! counts; for q4 a join of auctions and bids filtered to the auction's lifetime, `Max` per auction
//! and a linear (sum, count) aggregate per category for the integer average.

use std::collections::BTreeMap;
use std::time::Instant;

use dbsp::operator::Max;
use dbsp::utils::{Tup2, Tup3};
use dbsp::{IndexedZSetReader, Runtime};
use kappa_engine::{PartitionId, Record};
use kappa_examples::{like_counts, nexmark};

/// One peer run: its wall-clock seconds and the final result its output adds up to.
pub struct PeerRun<T> {
    /// Seconds from building the circuit to the last transaction's output read.
    pub seconds: f64,
    /// The output's final state.
    pub output: T,
    /// Output updates read, over all transactions.
    pub updates: u64,
}

fn dbsp_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("dbsp: {e}")
}

/// Feeds `logs` round by round: `each` gets one round's decoded updates.
fn rounds<D: Send>(
    workers: usize,
    logs: &[(PartitionId, Vec<Record>)],
    batch: usize,
    decode: impl Fn(&Record) -> Option<D> + Sync,
    mut each: impl FnMut(Vec<D>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut at = 0;
    while logs.iter().any(|(_, log)| at < log.len()) {
        let decode = &decode;
        let parsed: Vec<Vec<D>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    s.spawn(move || {
                        let mut out = Vec::new();
                        for (_, log) in logs.iter().skip(w).step_by(workers) {
                            let end = (at + batch).min(log.len());
                            out.extend(log[at.min(end)..end].iter().filter_map(decode));
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("parser thread")).collect()
        });
        each(parsed.into_iter().flatten().collect())?;
        at += batch;
    }
    Ok(())
}

/// Like counts on DBSP: per post, the users whose likes minus unlikes are positive.
pub fn like_counts(
    workers: usize,
    logs: &[(PartitionId, Vec<Record>)],
    batch: usize,
) -> anyhow::Result<PeerRun<BTreeMap<u64, u64>>> {
    let started = Instant::now();
    let (mut circuit, (input, output)) = Runtime::init_circuit(workers, |circuit| {
        let (pairs, input) = circuit.add_input_zset::<Tup2<u64, u64>>();
        let counts = pairs.distinct().map(|Tup2(_user, post)| *post).weighted_count();
        Ok((input, counts.accumulate_output()))
    })
    .map_err(dbsp_error)?;
    let mut state: BTreeMap<(u64, i64), i64> = BTreeMap::new();
    let mut updates = 0;
    rounds(
        workers,
        logs,
        batch,
        |r| like_counts::decode_pair(r).ok().map(|((user, post), _ts, diff)| Tup2(Tup2(user, post), diff as i64)),
        |mut batch| {
            input.append(&mut batch);
            circuit.transaction().map_err(dbsp_error)?;
            for (post, count, w) in output.concat().consolidate().iter() {
                updates += 1;
                *state.entry((post, count)).or_default() += w;
            }
            Ok(())
        },
    )?;
    circuit.kill().map_err(|_| anyhow::anyhow!("dbsp: a worker panicked"))?;
    let seconds = started.elapsed().as_secs_f64();
    let output = present(state).into_iter().map(|(post, likes)| (post, likes as u64)).collect();
    Ok(PeerRun { seconds, output, updates })
}

/// Nexmark q4 on DBSP: per category, the integer average of the auctions' final prices.
pub fn q4(
    workers: usize,
    logs: &[(PartitionId, Vec<Record>)],
    batch: usize,
) -> anyhow::Result<PeerRun<BTreeMap<u64, u64>>> {
    let started = Instant::now();
    let (mut circuit, (auctions_in, bids_in, output)) = Runtime::init_circuit(workers, |circuit| {
        // auction id -> (category, opens, expires); auction id -> (time, price)
        let (auctions, auctions_in) = circuit.add_input_indexed_zset::<u64, Tup3<u64, u64, u64>>();
        let (bids, bids_in) = circuit.add_input_indexed_zset::<u64, Tup2<u64, u64>>();
        let finals = auctions
            .join_index(&bids, |&id, &Tup3(category, opens, expires), &Tup2(t, price)| {
                (opens <= t && t <= expires).then_some((Tup2(id, category), price))
            })
            .aggregate(Max);
        let averages =
            finals.map_index(|(Tup2(_id, category), price)| (*category, *price)).aggregate_linear_postprocess(
                |&price: &u64| Tup2(price as i64, 1i64),
                |Tup2(sum, n)| (sum / n.max(1)) as u64,
            );
        Ok((auctions_in, bids_in, averages.accumulate_output()))
    })
    .map_err(dbsp_error)?;
    let mut state: BTreeMap<(u64, u64), i64> = BTreeMap::new();
    let mut updates = 0;
    rounds(
        workers,
        logs,
        batch,
        |r| nexmark::decode(r).ok().map(|(event, _ts)| event),
        |events| {
            let mut auctions = Vec::new();
            let mut bids = Vec::new();
            for event in events {
                match event {
                    nexmark::Event::Auction(a) => {
                        auctions.push(Tup2(a.id, Tup2(Tup3(a.category, a.date_time, a.expires), 1)))
                    }
                    nexmark::Event::Bid(b) => bids.push(Tup2(b.auction, Tup2(Tup2(b.date_time, b.price), 1))),
                    nexmark::Event::Person(_) => {}
                }
            }
            auctions_in.append(&mut auctions);
            bids_in.append(&mut bids);
            circuit.transaction().map_err(dbsp_error)?;
            for (category, average, w) in output.concat().consolidate().iter() {
                updates += 1;
                *state.entry((category, average)).or_default() += w;
            }
            Ok(())
        },
    )?;
    circuit.kill().map_err(|_| anyhow::anyhow!("dbsp: a worker panicked"))?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(PeerRun { seconds, output: present(state), updates })
}

/// The rows of a key -> value output whose weights add up to one.
fn present<V: Ord>(state: BTreeMap<(u64, V), i64>) -> BTreeMap<u64, V> {
    state.into_iter().filter(|&(_, w)| w == 1).map(|((k, v), _)| (k, v)).collect()
}
