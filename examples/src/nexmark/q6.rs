//! q6, average selling price by seller: `SELECT Q.seller, AVG(Q.final) OVER (PARTITION BY
//! Q.seller ORDER BY Q.dateTime ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) FROM (SELECT
//! MAX(B.price) AS final, A.seller, B.dateTime FROM auction AS A, bid AS B WHERE A.id = B.auction
//! and B.dateTime between A.dateTime and A.expires GROUP BY A.id, A.seller) AS Q`: per seller, the
//! integer average final price of its ten most recent auctions (by opening time, then id).

use std::collections::BTreeMap;

use kappa_engine::Collection;

use super::q4::{final_prices, final_prices_reference};
use super::{int, Auction, Bid, Row, Tables};

/// q6: per seller, the average final price of its ten most recent auctions. Prices are at most
/// [`MAX_PRICE`](super::MAX_PRICE) < 2^32, so the sum of ten stays below 2^36.
pub fn q6<'s>(auctions: Collection<'s, Auction>, bids: Collection<'s, Bid>) -> Collection<'s, Row> {
    final_prices(auctions, bids)
        .map(|(a, price)| (a.seller, (u64::MAX - a.date_time, u64::MAX - a.id, price)))
        .reduce(|_seller, recent, out| {
            // Sorted by (MAX − time, MAX − id): most recent first.
            let last: Vec<u64> = recent.iter().take(10).map(|((_, _, price), _)| *price).collect();
            out.push((last.iter().sum::<u64>() / last.len() as u64, 1));
        })
        .map(|(seller, average)| vec![int(seller), int(average)])
}

pub(super) fn reference(t: &Tables) -> Vec<Row> {
    let mut by_seller: BTreeMap<u64, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for (a, price) in final_prices_reference(t) {
        by_seller.entry(a.seller).or_default().push((a.date_time, a.id, price));
    }
    by_seller
        .into_iter()
        .map(|(seller, mut sold)| {
            // The seller's ten most recent auctions.
            sold.sort_unstable_by_key(|s| std::cmp::Reverse((s.0, s.1)));
            sold.truncate(10);
            vec![int(seller), int(sold.iter().map(|s| s.2).sum::<u64>() / sold.len() as u64)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn q6_equals_its_batch_reference_on_one_and_two_workers() {
        super::super::tests::check(super::super::Query::Q6);
    }
}
