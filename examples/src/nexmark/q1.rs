//! q1, currency conversion: `SELECT auction, bidder, 0.908 * price as price, dateTime FROM bid`,
//! in integers: `price · 908 / 1000`.

use kappa_engine::Collection;

use super::{int, Bid, Row, Tables};

/// q1: every bid with its price in euros (integer cents). Prices are at most
/// [`MAX_PRICE`](super::MAX_PRICE) < 2^32, so `price · 908` stays below 2^42.
pub fn q1(bids: Collection<'_, Bid>) -> Collection<'_, Row> {
    bids.map(|b| vec![int(b.auction), int(b.bidder), int(b.price * 908 / 1000), int(b.date_time)])
}

pub(super) fn reference(t: &Tables) -> Vec<Row> {
    t.bids.iter().map(|b| vec![int(b.auction), int(b.bidder), int(b.price * 908 / 1000), int(b.date_time)]).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn q1_equals_its_batch_reference_on_one_and_two_workers() {
        super::super::tests::check(super::super::Query::Q1);
    }
}
