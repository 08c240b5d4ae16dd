//! q5, hot items: per hopping window (10 s, every 2 s) the auctions with the most bids: `SELECT
//! AuctionBids.auction, AuctionBids.num FROM (SELECT auction, count(*) AS num, window_start ...
//! FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
//! GROUP BY auction, window_start, window_end) AS AuctionBids JOIN (SELECT max(num) AS maxn, ...
//! GROUP BY starttime, endtime) AS MaxBids ON ... AND AuctionBids.num >= MaxBids.maxn`.

use std::collections::BTreeMap;

use differential_dataflow::operators::CountTotal;
use kappa_engine::Collection;

use super::max::max_by_key;
use super::{hop_windows, int, Bid, Row, Tables};

/// q5: per hopping window, the auctions with the most bids.
pub fn q5(bids: Collection<'_, Bid>) -> Collection<'_, Row> {
    let counts = bids
        .flat_map(|b| hop_windows(b.date_time).map(move |w| (w, b.auction)))
        .count_total()
        .map(|((w, auction), n)| (w, auction, n as u64));
    let most = max_by_key(counts.clone().map(|(w, _, n)| (w, n)));
    counts
        .map(|(w, auction, n)| ((w, n), auction))
        .join_map(most.map(|(w, n)| ((w, n), ())), |&(w, n), &auction, &()| vec![int(w), int(auction), int(n)])
}

pub(super) fn reference(t: &Tables) -> Vec<Row> {
    let mut counts: BTreeMap<(u64, u64), u64> = BTreeMap::new();
    for b in &t.bids {
        for w in hop_windows(b.date_time) {
            *counts.entry((w, b.auction)).or_default() += 1;
        }
    }
    let mut max: BTreeMap<u64, u64> = BTreeMap::new();
    for (&(w, _), &n) in &counts {
        let m = max.entry(w).or_default();
        *m = (*m).max(n);
    }
    counts
        .into_iter()
        .filter(|&((w, _), n)| n == max[&w])
        .map(|((w, auction), n)| vec![int(w), int(auction), int(n)])
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn q5_equals_its_batch_reference_on_one_and_two_workers() {
        super::super::tests::check(super::super::Query::Q5);
    }
}
