//! q7, highest bid: per tumbling 10 s window, the bids at the window's highest price: `SELECT
//! B.auction, B.price, B.bidder, B.dateTime FROM bid B JOIN (SELECT MAX(price) AS maxprice,
//! window_end as dateTime FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10'
//! SECOND)) GROUP BY window_start, window_end) B1 ON B.price = B1.maxprice WHERE B.dateTime
//! BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime` (with the window's start).

use std::collections::BTreeMap;

use kappa_engine::Collection;

use super::max::max_by_key;
use super::{int, tumble, Bid, Row, Tables};

/// q7: per tumbling window, the bids at its highest price.
pub fn q7(bids: Collection<'_, Bid>) -> Collection<'_, Row> {
    let by_window = bids.map(|b| (tumble(b.date_time), b));
    let highest = max_by_key(by_window.clone().map(|(w, b)| (w, b.price)));
    by_window
        .map(|(w, b)| ((w, b.price), (b.auction, b.bidder, b.date_time)))
        .join_map(highest.map(|(w, price)| ((w, price), ())), |&(w, price), &(auction, bidder, t), &()| {
            vec![int(w), int(auction), int(price), int(bidder), int(t)]
        })
}

pub(super) fn reference(t: &Tables) -> Vec<Row> {
    let mut max: BTreeMap<u64, u64> = BTreeMap::new();
    for b in &t.bids {
        let m = max.entry(tumble(b.date_time)).or_default();
        *m = (*m).max(b.price);
    }
    t.bids
        .iter()
        .filter(|b| b.price == max[&tumble(b.date_time)])
        .map(|b| vec![int(tumble(b.date_time)), int(b.auction), int(b.price), int(b.bidder), int(b.date_time)])
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn q7_equals_its_batch_reference_on_one_and_two_workers() {
        super::super::tests::check(super::super::Query::Q7);
    }
}
