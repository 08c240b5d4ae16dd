//! q4, average price for a category: `SELECT Q.category, AVG(Q.final) FROM (SELECT MAX(B.price)
//! AS final, A.category FROM auction A, bid B WHERE A.id = B.auction AND B.dateTime BETWEEN
//! A.dateTime AND A.expires GROUP BY A.id, A.category) Q GROUP BY Q.category` (integer average).
//!
//! Also the final prices it shares with q6.

use std::collections::BTreeMap;

use differential_dataflow::operators::CountTotal;
use kappa_engine::{Collection, Diff};

use super::max::max_by_key;
use super::{int, Auction, Bid, Row, Tables};

/// q4: per category, the integer average of its auctions' final prices.
///
/// The sum is a 64-bit [`Diff`]: exact while a category has fewer than 2^31 auctions, every price
/// being at most [`MAX_PRICE`](super::MAX_PRICE) < 2^32.
pub fn q4<'s>(auctions: Collection<'s, Auction>, bids: Collection<'s, Bid>) -> Collection<'s, Row> {
    let finals = final_prices(auctions, bids).map(|(a, price)| (a.category, price));
    // Sum and count carried in differences: a new final price is one update per category.
    let sums = finals
        .clone()
        .explode(|(category, price)| Some((category, Diff::try_from(price).expect("decode bounds price"))))
        .count_total();
    let counts = finals.map(|(category, _)| category).count_total();
    sums.join_map(counts, |&category, &sum, &count| vec![int(category), int(sum as u64 / count.max(1) as u64)])
}

/// The final price of every auction with a bid inside its lifetime: `SELECT MAX(B.price) AS final,
/// A.* FROM auction A, bid B WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND
/// A.expires GROUP BY A.id`.
pub(super) fn final_prices<'s>(
    auctions: Collection<'s, Auction>,
    bids: Collection<'s, Bid>,
) -> Collection<'s, (Auction, u64)> {
    let by_id = auctions.map(|a| (a.id, a));
    let in_lifetime = by_id
        .clone()
        .join_map(bids.map(|b| (b.auction, (b.date_time, b.price))), |&id, a, &(t, price)| {
            (id, a.date_time <= t && t <= a.expires, price)
        })
        .filter(|(_, inside, _)| *inside)
        .map(|(id, _, price)| (id, price));
    by_id.join_map(max_by_key(in_lifetime), |_id, a, &price| (*a, price))
}

/// The reference's final prices: per auction, the highest bid inside its lifetime.
pub(super) fn final_prices_reference<'a>(t: &Tables<'a>) -> Vec<(&'a Auction, u64)> {
    // Bids looked up by auction (not scanned per auction) so that benchmarks can check millions
    // of events against this reference too.
    let mut bids_of: BTreeMap<u64, Vec<&Bid>> = BTreeMap::new();
    for b in &t.bids {
        bids_of.entry(b.auction).or_default().push(b);
    }
    t.auctions
        .iter()
        .filter_map(|a| {
            let inside = bids_of.get(&a.id).into_iter().flatten();
            let best = inside.filter(|b| a.date_time <= b.date_time && b.date_time <= a.expires).map(|b| b.price).max();
            best.map(|price| (*a, price))
        })
        .collect()
}

pub(super) fn reference(t: &Tables) -> Vec<Row> {
    let mut by_category: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (a, price) in final_prices_reference(t) {
        by_category.entry(a.category).or_default().push(price);
    }
    by_category
        .into_iter()
        .map(|(category, prices)| vec![int(category), int(prices.iter().sum::<u64>() / prices.len() as u64)])
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn q4_equals_its_batch_reference_on_one_and_two_workers() {
        super::super::tests::check(super::super::Query::Q4);
    }
}
