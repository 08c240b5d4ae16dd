//! Seeded synthetic inputs.
//!
//! Like streams with skewed post popularity, unlikes (mostly of earlier likes, sometimes of pairs
//! never liked), and out-of-order timestamps within and beyond the default lateness.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::like_counts::{Kind, Like};

/// Shape of a generated like stream.
#[derive(Clone, Debug)]
pub struct LikeStreamConfig {
    /// Number of events.
    pub events: usize,
    /// Partitions; a user's events all go to partition `user % partitions`.
    pub partitions: i32,
    /// Distinct users.
    pub users: u64,
    /// Distinct posts; low ids are far more popular.
    pub posts: u64,
    /// Timestamps jitter by up to this many ms either way around a steady clock.
    pub jitter_ms: u64,
    /// Seed: the same config gives the same stream.
    pub seed: u64,
}

impl LikeStreamConfig {
    /// A stream of `events` events with proportionate users and posts.
    pub fn new(events: usize) -> Self {
        LikeStreamConfig {
            events,
            partitions: 4,
            users: (events as u64 / 20).max(10),
            posts: (events as u64 / 50).max(5),
            jitter_ms: 3_000,
            seed: 42,
        }
    }
}

/// Event time of the first generated event.
pub const START_MS: u64 = 1_700_000_000_000;

/// Generates the stream: `(partition, event)` in production order.
pub fn like_stream(config: &LikeStreamConfig) -> Vec<(i32, Like)> {
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let mut liked: Vec<(u64, u64)> = Vec::new();
    let mut out = Vec::with_capacity(config.events);
    for i in 0..config.events as u64 {
        let clock = START_MS + i * 2;
        let jitter = rng.random_range(0..=2 * config.jitter_ms);
        let ts = (clock + jitter).saturating_sub(config.jitter_ms);
        let unlike = !liked.is_empty() && rng.random_bool(0.25);
        let (user, post, kind) = if unlike && rng.random_bool(0.9) {
            let (user, post) = liked.swap_remove(rng.random_range(0..liked.len()));
            (user, post, Kind::Unlike)
        } else if unlike {
            (rng.random_range(0..config.users), rng.random_range(0..config.posts), Kind::Unlike)
        } else {
            let user = rng.random_range(0..config.users);
            // Cubing a uniform draw skews popularity towards low post ids.
            let r: f64 = rng.random();
            let post = ((r * r * r) * config.posts as f64) as u64;
            liked.push((user, post));
            (user, post, Kind::Like)
        };
        out.push(((user % config.partitions as u64) as i32, Like { ts, user, post, kind }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_have_unlikes_and_disorder() {
        let config = LikeStreamConfig::new(10_000);
        let a = like_stream(&config);
        assert_eq!(a, like_stream(&config));
        assert!(a.iter().any(|(_, l)| l.kind == Kind::Unlike));
        assert!(a.windows(2).any(|w| w[1].1.ts + 5_000 < w[0].1.ts + 1_000), "some events are out of order");
        assert!(a.iter().all(|(p, l)| *p == (l.user % 4) as i32));
    }
}

/// Shape of a generated social graph: follows, posts, and likes of those posts.
#[derive(Clone, Debug)]
pub struct SocialConfig {
    /// Users.
    pub users: u64,
    /// Follow and unfollow events.
    pub follows: usize,
    /// Posts.
    pub posts: u64,
    /// Like and unlike events on those posts.
    pub likes: usize,
    /// Partitions of each topic.
    pub partitions: i32,
    /// Seed.
    pub seed: u64,
}

impl Default for SocialConfig {
    fn default() -> Self {
        SocialConfig { users: 300, follows: 3_000, posts: 500, likes: 8_000, partitions: 4, seed: 7 }
    }
}

/// A power-law draw in `0..n`: low values are far more likely (cubing a uniform draw).
fn skewed(rng: &mut SmallRng, n: u64) -> u64 {
    let r: f64 = rng.random();
    ((r * r * r) * n as f64) as u64
}

/// Follow events: followees drawn with power-law popularity, about one in six an unfollow of an
/// earlier follow. Partitioned by follower.
pub fn follow_stream(config: &SocialConfig) -> Vec<(i32, crate::ranked_feed::Follow)> {
    use crate::ranked_feed::{Follow, FollowKind};
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let mut edges: Vec<(u64, u64)> = Vec::new();
    let mut out = Vec::with_capacity(config.follows);
    for i in 0..config.follows as u64 {
        let ts = START_MS + i * 20 + rng.random_range(0..2_000);
        let (follower, followee, kind) = if !edges.is_empty() && rng.random_bool(1.0 / 6.0) {
            let (a, b) = edges.swap_remove(rng.random_range(0..edges.len()));
            (a, b, FollowKind::Unfollow)
        } else {
            let follower = rng.random_range(0..config.users);
            let mut followee = skewed(&mut rng, config.users);
            if followee == follower {
                followee = (followee + 1) % config.users;
            }
            edges.push((follower, followee));
            (follower, followee, FollowKind::Follow)
        };
        out.push(((follower % config.partitions as u64) as i32, Follow { ts, follower, followee, kind }));
    }
    out
}

/// Posts `0..posts`, authors drawn with power-law activity, published over the follow stream's span.
pub fn post_stream(config: &SocialConfig) -> Vec<(i32, crate::ranked_feed::Post)> {
    let mut rng = SmallRng::seed_from_u64(config.seed + 1);
    (0..config.posts)
        .map(|post| {
            let ts = START_MS + post * 100 + rng.random_range(0..2_000);
            let author = skewed(&mut rng, config.users);
            ((post % config.partitions as u64) as i32, crate::ranked_feed::Post { ts, post, author })
        })
        .collect()
}

/// Likes of the social graph's posts.
pub fn social_likes(config: &SocialConfig) -> Vec<(i32, Like)> {
    like_stream(&LikeStreamConfig {
        events: config.likes,
        partitions: config.partitions,
        users: config.users,
        posts: config.posts,
        jitter_ms: 3_000,
        seed: config.seed + 2,
    })
}

/// Shape of a generated payment stream.
#[derive(Clone, Debug)]
pub struct PaymentConfig {
    /// Honest payments.
    pub payments: usize,
    /// Cards (each honest card mostly uses its own device).
    pub cards: u64,
    /// Fraud rings planted among the honest traffic.
    pub rings: usize,
    /// Partitions, by card.
    pub partitions: i32,
    /// Seed.
    pub seed: u64,
}

impl Default for PaymentConfig {
    fn default() -> Self {
        PaymentConfig { payments: 30_000, cards: 5_000, rings: 12, partitions: 4, seed: 11 }
    }
}

/// Honest payments (a card on its own device, now and then on a random one) with fraud rings
/// planted among them: 3 to 5 cards sharing one or two devices within minutes, spending big.
pub fn payment_stream(config: &PaymentConfig) -> Vec<(i32, crate::fraud_alerts::Payment)> {
    use crate::fraud_alerts::Payment;
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let mut out = Vec::new();
    let span = config.payments as u64 * 1_000;
    let mut id = 0u64;
    for i in 0..config.payments as u64 {
        let card = rng.random_range(0..config.cards);
        let device = if rng.random_bool(0.02) { rng.random_range(0..config.cards) } else { card };
        let ts = START_MS + i * 1_000 + rng.random_range(0..3_000);
        out.push(Payment {
            ts,
            payment: id,
            card,
            device,
            merchant: rng.random_range(0..500),
            amount_cents: rng.random_range(100..20_000),
        });
        id += 1;
    }
    for r in 0..config.rings as u64 {
        let start = START_MS + rng.random_range(0..span);
        let members = rng.random_range(3..=5u64);
        let devices = [config.cards + 2 * r, config.cards + 2 * r + 1];
        for m in 0..members {
            let card = config.cards + 100 * r + m;
            for k in 0..2u64 {
                let ts = start + (m * 2 + k) * 30_000;
                let device = devices[((m + k) % 2) as usize];
                out.push(Payment {
                    ts,
                    payment: id,
                    card,
                    device,
                    merchant: 7,
                    amount_cents: rng.random_range(20_000..60_000),
                });
                id += 1;
            }
        }
    }
    out.sort_by_key(|p| p.ts);
    out.into_iter().map(|p| ((p.card % config.partitions as u64) as i32, p)).collect()
}

/// Like events as Kafka records: keyed by user, JSON value, timestamped by `ts`.
pub fn like_records(events: &[(i32, Like)]) -> Vec<kappa_connectors::kafka::producer::OutgoingRecord> {
    events
        .iter()
        .map(|(partition, like)| kappa_connectors::kafka::producer::OutgoingRecord {
            partition: *partition,
            key: like.user.to_string().into_bytes(),
            value: serde_json::to_vec(like).expect("likes serialize"),
            timestamp: like.ts as i64,
        })
        .collect()
}
