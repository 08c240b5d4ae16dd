//! Ranked feed, from three topics replayed from archives and continued live, against the batch
//! reference (plain-Rust PageRank, like counts and top-10 per user) at every completed time.

use kappa_engine::{ClusterConfig, JobOptions, MemorySink};
use kappa_examples::like_counts::{Kind, Like};
use kappa_examples::ranked_feed::{self, FeedEntry, Follow, FollowKind, Post};
use kappa_proptests::{accumulated_at, json_record, reference_times, split_input, SplitPartition};
use proptest::prelude::*;

#[derive(Clone, Debug)]
struct Case {
    follows: Vec<Follow>,
    posts: Vec<Post>,
    likes: Vec<Like>,
    splits: [usize; 3],
    workers: usize,
    batch: usize,
}

fn ts(i: usize, jitter: u64) -> u64 {
    10_000 + i as u64 * 500 + jitter
}

fn case() -> impl Strategy<Value = Case> {
    let follows = prop::collection::vec((0u64..6, 0u64..6, prop::bool::weighted(0.75), 0u64..7_000), 0..30);
    let posts = prop::collection::vec((0u64..14, 0u64..6, 0u64..7_000), 0..14);
    let likes = prop::collection::vec((0u64..6, 0u64..14, prop::bool::weighted(0.75), 0u64..7_000), 0..30);
    (follows, posts, likes, 1usize..=4, 1usize..6)
        .prop_flat_map(|(f, p, l, workers, batch)| {
            let follows: Vec<Follow> = f
                .into_iter()
                .enumerate()
                .filter(|(_, (a, b, _, _))| a != b)
                .map(|(i, (follower, followee, follow, j))| Follow {
                    ts: ts(i, j),
                    follower,
                    followee,
                    kind: if follow { FollowKind::Follow } else { FollowKind::Unfollow },
                })
                .collect();
            let posts: Vec<Post> =
                p.into_iter().enumerate().map(|(i, (post, author, j))| Post { ts: ts(i, j), post, author }).collect();
            let likes: Vec<Like> = l
                .into_iter()
                .enumerate()
                .map(|(i, (user, post, like, j))| Like {
                    ts: ts(i, j),
                    user,
                    post,
                    kind: if like { Kind::Like } else { Kind::Unlike },
                })
                .collect();
            let (nf, np, nl) = (follows.len(), posts.len(), likes.len());
            (Just(follows), Just(posts), Just(likes), 0..=nf, 0..=np, 0..=nl, Just(workers), Just(batch))
        })
        .prop_map(|(follows, posts, likes, sf, sp, sl, workers, batch)| Case {
            follows,
            posts,
            likes,
            splits: [sf, sp, sl],
            workers,
            batch,
        })
}

fn one_partition<T: serde::Serialize>(items: &[T], split: usize) -> Vec<SplitPartition> {
    vec![SplitPartition {
        records: items.iter().enumerate().map(|(i, x)| json_record(i, x)).collect(),
        split,
        segment: 3,
    }]
}

fn timed<T: Copy>(items: &[T], ts: impl Fn(&T) -> u64) -> Vec<(u64, T)> {
    let stamps: Vec<u64> = items.iter().map(ts).collect();
    reference_times(&stamps, JobOptions::default().lateness_ms).into_iter().zip(items.iter().copied()).collect()
}

fn upto<T: Copy>(timed: &[(u64, T)], t: u64) -> Vec<T> {
    timed.iter().filter(|(rt, _)| *rt <= t).map(|(_, x)| *x).collect()
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let follows = split_input("follows", &one_partition(&case.follows, case.splits[0]), case.batch);
    let posts = split_input("posts", &one_partition(&case.posts, case.splits[1]), case.batch);
    let likes = split_input("likes", &one_partition(&case.likes, case.splits[2]), case.batch);
    let sink = MemorySink::<FeedEntry>::new();
    ranked_feed::run(&ClusterConfig::threads(case.workers), JobOptions::default(), follows, posts, likes, sink.clone())
        .expect("the job runs");

    let (tf, tp, tl) = (timed(&case.follows, |f| f.ts), timed(&case.posts, |p| p.ts), timed(&case.likes, |l| l.ts));
    let mut times: Vec<u64> =
        tf.iter().map(|x| x.0).chain(tp.iter().map(|x| x.0)).chain(tl.iter().map(|x| x.0)).collect();
    times.sort();
    times.dedup();
    let updates = sink.updates();
    for &t in &times {
        let (f, p, l) = (upto(&tf, t), upto(&tp, t), upto(&tl, t));
        let expected = ranked_feed::reference(&f, &p, &l);
        let actual = accumulated_at(&updates, t).map_err(TestCaseError::fail)?;
        prop_assert_eq!(actual, expected, "accumulated output at time {} differs from the reference", t);
    }
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn ranked_feeds_equal_the_batch_reference_at_every_time(case in case()) {
        run_case(&case)?;
    }
}
