//! Ranked feed, from three topics replayed from archives and continued live, against the batch
//! reference (plain-Rust PageRank, like counts and top-10 per user) at every completed time, on
//! the property harness (archive/live splits, 1 to 4 workers, batchings, granularities, restarts).
//!
//! Re-run a failure with `cargo test -p kappa-proptests --test ranked_feed`; raise
//! `PROPTEST_CASES` for a longer search.

use kappa_engine::Record;
use kappa_examples::like_counts::{Kind, Like};
use kappa_examples::ranked_feed::{self, Follow, FollowKind, Post, RankedFeed, FOLLOW_EDGES, LIKE_PAIRS, POST_AUTHORS};
use kappa_proptests::harness::Harness;
use kappa_proptests::json_record;
use proptest::prelude::*;

/// The `i`th event of a partition: one every 500 ms, disordered by up to 7 s.
fn ts(i: usize, jitter: u64) -> u64 {
    10_000 + i as u64 * 500 + jitter
}

fn follows() -> impl Strategy<Value = Vec<Follow>> {
    prop::collection::vec((0u64..6, 0u64..6, prop::bool::weighted(0.75), 0u64..7_000), 0..30).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .filter(|(_, (a, b, _, _))| a != b)
            .map(|(i, (follower, followee, follow, j))| Follow {
                ts: ts(i, j),
                follower,
                followee,
                kind: if follow { FollowKind::Follow } else { FollowKind::Unfollow },
            })
            .collect()
    })
}

fn posts() -> impl Strategy<Value = Vec<Post>> {
    prop::collection::vec((0u64..14, 0u64..6, 0u64..7_000), 0..14).prop_map(|raw| {
        raw.into_iter().enumerate().map(|(i, (post, author, j))| Post { ts: ts(i, j), post, author }).collect()
    })
}

fn likes() -> impl Strategy<Value = Vec<Like>> {
    prop::collection::vec((0u64..6, 0u64..14, prop::bool::weighted(0.75), 0u64..7_000), 0..30).prop_map(|raw| {
        raw.into_iter()
            .enumerate()
            .map(|(i, (user, post, like, j))| Like {
                ts: ts(i, j),
                user,
                post,
                kind: if like { Kind::Like } else { Kind::Unlike },
            })
            .collect()
    })
}

fn json<T: serde::Serialize>(value: &T) -> Record {
    json_record(0, value)
}

#[test]
fn ranked_feeds_equal_the_batch_reference_at_every_time() {
    Harness::new(RankedFeed)
        .input(&FOLLOW_EDGES, prop::collection::vec(follows(), 1..3), json::<Follow>)
        .input(&POST_AUTHORS, prop::collection::vec(posts(), 1..3), json::<Post>)
        .input(&LIKE_PAIRS, prop::collection::vec(likes(), 1..3), json::<Like>)
        .reference(|at| {
            ranked_feed::reference(
                at.events::<Follow>(ranked_feed::FOLLOWS),
                at.events::<Post>(ranked_feed::POSTS),
                at.events::<Like>(ranked_feed::LIKES),
            )
        })
        .cases(128)
        .check();
}
