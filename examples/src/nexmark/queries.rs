//! The nine queries. Each quotes the SQL of Flink's Nexmark suite it implements.

use differential_dataflow::operators::CountTotal;
use kappa_engine::Collection;

use super::{hop_windows, tumble, Auction, Bid, Person, Row, Value};

fn int(v: u64) -> Value {
    Value::Int(v)
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// q0, pass-through: `SELECT auction, bidder, price, dateTime FROM bid`.
pub fn q0(bids: Collection<'_, Bid>) -> Collection<'_, Row> {
    bids.map(|b| vec![int(b.auction), int(b.bidder), int(b.price), int(b.date_time)])
}

/// q1, currency conversion: `SELECT auction, bidder, 0.908 * price as price, dateTime FROM bid`,
/// in integers: `price · 908 / 1000`.
pub fn q1(bids: Collection<'_, Bid>) -> Collection<'_, Row> {
    bids.map(|b| vec![int(b.auction), int(b.bidder), int(b.price * 908 / 1000), int(b.date_time)])
}

/// q2, selection: `SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0`.
pub fn q2(bids: Collection<'_, Bid>) -> Collection<'_, Row> {
    bids.filter(|b| b.auction % 123 == 0).map(|b| vec![int(b.auction), int(b.price)])
}

/// q3, local item suggestion: `SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN
/// person AS P on A.seller = P.id WHERE A.category = 10 and (P.state = 'OR' OR P.state = 'ID' OR
/// P.state = 'CA')` (the generator's states are lowercase).
pub fn q3<'s>(persons: Collection<'s, Person>, auctions: Collection<'s, Auction>) -> Collection<'s, Row> {
    let sellers =
        persons.filter(|p| matches!(p.state.as_str(), "or" | "id" | "ca")).map(|p| (p.id, (p.name, p.city, p.state)));
    auctions
        .filter(|a| a.category == 10)
        .map(|a| (a.seller, a.id))
        .join_map(sellers, |_seller, &id, (name, city, state)| vec![text(name), text(city), text(state), int(id)])
}

/// The final price of every auction with a bid inside its lifetime: `SELECT MAX(B.price) AS final,
/// A.* FROM auction A, bid B WHERE A.id = B.auction AND B.dateTime BETWEEN A.dateTime AND
/// A.expires GROUP BY A.id`.
fn final_prices<'s>(auctions: Collection<'s, Auction>, bids: Collection<'s, Bid>) -> Collection<'s, (Auction, u64)> {
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

/// Per key, the largest value. In two levels (key and value bucket, then key) so that a change
/// re-reads one bucket of a key's values and the key's bucket maxima, not every value of the key:
/// a window or a hot auction holds thousands.
fn max_by_key<'s>(pairs: Collection<'s, (u64, u64)>) -> Collection<'s, (u64, u64)> {
    pairs
        .map(|(key, value)| ((key, value.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58), value))
        // Values are sorted ascending: the last is the largest.
        .reduce(|_key_bucket, values, out| out.push((*values[values.len() - 1].0, 1)))
        .map(|((key, _bucket), value)| (key, value))
        .reduce(|_key, values, out| out.push((*values[values.len() - 1].0, 1)))
}

/// q4, average price for a category: `SELECT Q.category, AVG(Q.final) FROM (SELECT MAX(B.price)
/// AS final, A.category FROM auction A, bid B WHERE A.id = B.auction AND B.dateTime BETWEEN
/// A.dateTime AND A.expires GROUP BY A.id, A.category) Q GROUP BY Q.category` (integer average).
pub fn q4<'s>(auctions: Collection<'s, Auction>, bids: Collection<'s, Bid>) -> Collection<'s, Row> {
    let finals = final_prices(auctions, bids).map(|(a, price)| (a.category, price));
    // Sum and count carried in differences: a new final price is one update per category.
    let sums = finals.clone().explode(|(category, price)| Some((category, price as isize))).count_total();
    let counts = finals.map(|(category, _)| category).count_total();
    sums.join_map(counts, |&category, &sum, &count| vec![int(category), int(sum as u64 / count.max(1) as u64)])
}

/// q5, hot items: per hopping window (10 s, every 2 s) the auctions with the most bids: `SELECT
/// AuctionBids.auction, AuctionBids.num FROM (SELECT auction, count(*) AS num, window_start ...
/// FROM TABLE(HOP(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
/// GROUP BY auction, window_start, window_end) AS AuctionBids JOIN (SELECT max(num) AS maxn, ...
/// GROUP BY starttime, endtime) AS MaxBids ON ... AND AuctionBids.num >= MaxBids.maxn`.
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

/// q6, average selling price by seller: `SELECT Q.seller, AVG(Q.final) OVER (PARTITION BY
/// Q.seller ORDER BY Q.dateTime ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) FROM (SELECT
/// MAX(B.price) AS final, A.seller, B.dateTime FROM auction AS A, bid AS B WHERE A.id = B.auction
/// and B.dateTime between A.dateTime and A.expires GROUP BY A.id, A.seller) AS Q`: per seller, the
/// integer average final price of its ten most recent auctions (by opening time, then id).
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

/// q7, highest bid: per tumbling 10 s window, the bids at the window's highest price: `SELECT
/// B.auction, B.price, B.bidder, B.dateTime FROM bid B JOIN (SELECT MAX(price) AS maxprice,
/// window_end as dateTime FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(dateTime), INTERVAL '10'
/// SECOND)) GROUP BY window_start, window_end) B1 ON B.price = B1.maxprice WHERE B.dateTime
/// BETWEEN B1.dateTime - INTERVAL '10' SECOND AND B1.dateTime` (with the window's start).
pub fn q7(bids: Collection<'_, Bid>) -> Collection<'_, Row> {
    let by_window = bids.map(|b| (tumble(b.date_time), b));
    let highest = max_by_key(by_window.clone().map(|(w, b)| (w, b.price)));
    by_window
        .map(|(w, b)| ((w, b.price), (b.auction, b.bidder, b.date_time)))
        .join_map(highest.map(|(w, price)| ((w, price), ())), |&(w, price), &(auction, bidder, t), &()| {
            vec![int(w), int(auction), int(price), int(bidder), int(t)]
        })
}

/// q8, monitor new users: persons who opened an auction in the tumbling 10 s window they
/// registered in: `SELECT P.id, P.name, P.starttime FROM (SELECT id, name, window_start AS
/// starttime ... FROM TABLE(TUMBLE(TABLE person, ...)) GROUP BY id, name, window_start,
/// window_end) P JOIN (SELECT seller, window_start AS starttime ... FROM TABLE(TUMBLE(TABLE
/// auction, ...)) GROUP BY seller, window_start, window_end) A ON P.id = A.seller AND P.starttime =
/// A.starttime AND P.endtime = A.endtime`.
pub fn q8<'s>(persons: Collection<'s, Person>, auctions: Collection<'s, Auction>) -> Collection<'s, Row> {
    let people = persons.map(|p| ((p.id, tumble(p.date_time)), p.name)).distinct();
    let sellers = auctions.map(|a| ((a.seller, tumble(a.date_time)), ())).distinct();
    people.join_map(sellers, |&(id, w), name, &()| vec![int(id), text(name), int(w)])
}
