//! q8, monitor new users: persons who opened an auction in the tumbling 10 s window they
//! registered in: `SELECT P.id, P.name, P.starttime FROM (SELECT id, name, window_start AS
//! starttime ... FROM TABLE(TUMBLE(TABLE person, ...)) GROUP BY id, name, window_start,
//! window_end) P JOIN (SELECT seller, window_start AS starttime ... FROM TABLE(TUMBLE(TABLE
//! auction, ...)) GROUP BY seller, window_start, window_end) A ON P.id = A.seller AND P.starttime =
//! A.starttime AND P.endtime = A.endtime`.

use std::collections::BTreeSet;

use kappa_engine::Collection;

use super::{int, text, tumble, Auction, Person, Row, Tables};

/// q8: persons who opened an auction in the window they registered in.
pub fn q8<'s>(persons: Collection<'s, Person>, auctions: Collection<'s, Auction>) -> Collection<'s, Row> {
    let people = persons.map(|p| ((p.id, tumble(p.date_time)), p.name)).distinct();
    let sellers = auctions.map(|a| ((a.seller, tumble(a.date_time)), ())).distinct();
    people.join_map(sellers, |&(id, w), name, &()| vec![int(id), text(name), int(w)])
}

pub(super) fn reference(t: &Tables) -> Vec<Row> {
    let sellers: BTreeSet<(u64, u64)> = t.auctions.iter().map(|a| (a.seller, tumble(a.date_time))).collect();
    let people: BTreeSet<(u64, &str, u64)> =
        t.persons.iter().map(|p| (p.id, p.name.as_str(), tumble(p.date_time))).collect();
    people
        .into_iter()
        .filter(|&(id, _, w)| sellers.contains(&(id, w)))
        .map(|(id, name, w)| vec![int(id), text(name), int(w)])
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn q8_equals_its_batch_reference_on_one_and_two_workers() {
        super::super::tests::check(super::super::Query::Q8);
    }
}
