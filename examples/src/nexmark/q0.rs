//! q0, pass-through: `SELECT auction, bidder, price, dateTime FROM bid`.

use kappa_engine::Collection;

use super::{int, Bid, Row, Tables};

/// q0: every bid, as a row.
pub fn q0(bids: Collection<'_, Bid>) -> Collection<'_, Row> {
    bids.map(|b| vec![int(b.auction), int(b.bidder), int(b.price), int(b.date_time)])
}

pub(super) fn reference(t: &Tables) -> Vec<Row> {
    t.bids.iter().map(|b| vec![int(b.auction), int(b.bidder), int(b.price), int(b.date_time)]).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn q0_equals_its_batch_reference_on_one_and_two_workers() {
        super::super::tests::check(super::super::Query::Q0);
    }
}
