//! q2, selection: `SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0`.

use kappa_engine::Collection;

use super::{int, Bid, Row, Tables};

/// q2: the bids on every 123rd auction.
pub fn q2(bids: Collection<'_, Bid>) -> Collection<'_, Row> {
    bids.filter(|b| b.auction % 123 == 0).map(|b| vec![int(b.auction), int(b.price)])
}

pub(super) fn reference(t: &Tables) -> Vec<Row> {
    t.bids.iter().filter(|b| b.auction % 123 == 0).map(|b| vec![int(b.auction), int(b.price)]).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn q2_equals_its_batch_reference_on_one_and_two_workers() {
        super::super::tests::check(super::super::Query::Q2);
    }
}
