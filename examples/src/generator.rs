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
