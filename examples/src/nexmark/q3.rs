//! q3, local item suggestion: `SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN
//! person AS P on A.seller = P.id WHERE A.category = 10 and (P.state = 'OR' OR P.state = 'ID' OR
//! P.state = 'CA')` (the generator's states are lowercase).

use kappa_engine::Collection;

use super::{int, text, Auction, Person, Row, Tables};

const STATES: [&str; 3] = ["or", "id", "ca"];

/// q3: category-10 auctions of sellers in Oregon, Idaho or California.
pub fn q3<'s>(persons: Collection<'s, Person>, auctions: Collection<'s, Auction>) -> Collection<'s, Row> {
    let sellers = persons.filter(|p| STATES.contains(&p.state.as_str())).map(|p| (p.id, (p.name, p.city, p.state)));
    auctions
        .filter(|a| a.category == 10)
        .map(|a| (a.seller, a.id))
        .join_map(sellers, |_seller, &id, (name, city, state)| vec![text(name), text(city), text(state), int(id)])
}

pub(super) fn reference(t: &Tables) -> Vec<Row> {
    let mut rows = Vec::new();
    for a in t.auctions.iter().filter(|a| a.category == 10) {
        for p in t.persons.iter().filter(|p| p.id == a.seller && STATES.contains(&p.state.as_str())) {
            rows.push(vec![text(&p.name), text(&p.city), text(&p.state), int(a.id)]);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    #[test]
    fn q3_equals_its_batch_reference_on_one_and_two_workers() {
        super::super::tests::check(super::super::Query::Q3);
    }
}
