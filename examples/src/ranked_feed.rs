//! Ranked feed: for every user, the ten best posts by the authors they follow, where an author's
//! weight is their PageRank in the follow graph.
//!
//! Inputs (JSON topics):
//! - `follows` `{"ts","follower","followee","kind":"follow"|"unfollow"}`: +1 / −1 to the pair; pairs
//!   with a positive net count are edges follower → followee.
//! - `posts` `{"ts","post","author"}`: a post exists from its first record on (should records
//!   disagree on the author, the smallest author id is taken).
//! - `likes`, as in [`like_counts`].
//!
//! Author rank is PageRank in integer micro-units: every user that appears in an edge starts at
//! 1,000,000; each of exactly 20 rounds computes
//! `rank'(v) = 150,000 + Σ over edges u→v of floor(rank(u) · 85 / (100 · outdeg(u)))`; mass of users
//! without out-edges is dropped; users without edges have no rank. A post's score is
//! `(likes(post) + 1) · rank(author)`, or 0 if the author has no rank. Output
//! `{"user","position","post","score"}`: for every user, the 10 highest-scoring posts by authors the
//! user follows now, ties broken by smaller post id, positions 1..10.
//!
//! The inputs carry only ids and times; what could overflow is computed from how many records
//! there are, which no decoder sees. So the products are taken in 128 bits, where they cannot
//! overflow ([`share`], [`score`]: a score passes 2^64 once a post of a popular author has millions
//! of likes), and the one sum kept in 64 bits, of rank shares, is bounded by the graph's size: see
//! [`author_ranks`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use differential_dataflow::operators::{CountTotal, ThresholdTotal};
use kappa_engine::{
    ClusterConfig, Collection, Diff, Input, InputInfo, Inputs, JobOptions, JobReport, Pipeline, Record, Retention,
    Sink, SourceFactory, Sources,
};
use serde::{Deserialize, Serialize};

use crate::decode::{json, DecodeError};
use crate::like_counts::{self, Like};

/// Input names.
pub const FOLLOWS: &str = "follows";
/// Input names.
pub const POSTS: &str = "posts";
/// Input names.
pub const LIKES: &str = "likes";
/// PageRank rounds.
pub const ROUNDS: usize = 20;
/// Posts per feed.
pub const FEED_LEN: usize = 10;

/// Follow or unfollow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FollowKind {
    /// +1 to the pair.
    Follow,
    /// −1 to the pair.
    Unfollow,
}

/// One follow event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Follow {
    /// Event time, ms.
    pub ts: u64,
    /// Who follows.
    pub follower: u64,
    /// Whom.
    pub followee: u64,
    /// Follow or unfollow.
    pub kind: FollowKind,
}

/// One post record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Post {
    /// Event time, ms.
    pub ts: u64,
    /// Post id.
    pub post: u64,
    /// Its author.
    pub author: u64,
}

/// One feed row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FeedEntry {
    /// Whose feed.
    pub user: u64,
    /// 1..=10.
    pub position: u64,
    /// The post.
    pub post: u64,
    /// Its score, `(likes + 1) · rank` (see [`score`]).
    pub score: u128,
}

impl kappa_engine::Keyed for FeedEntry {
    fn key(&self) -> serde_json::Value {
        serde_json::json!({ "user": self.user, "position": self.position })
    }
}

/// Decodes a follow event.
pub fn decode_follow(record: &Record) -> Result<(Follow, u64), DecodeError> {
    json::<Follow>(record, "follow event").map(|f| (f, f.ts))
}

/// Decodes a follow event into the pair it changes, `(follower, followee)`, +1 for a follow and
/// −1 for an unfollow (the form a checkpoint keeps).
pub fn decode_edge(record: &Record) -> Result<((u64, u64), u64, Diff), DecodeError> {
    let (f, ts) = decode_follow(record)?;
    Ok(((f.follower, f.followee), ts, if f.kind == FollowKind::Follow { 1 } else { -1 }))
}

/// Decodes a post record into `(post, author)`.
pub fn decode_post_author(record: &Record) -> Result<((u64, u64), u64, Diff), DecodeError> {
    let (p, ts) = decode_post(record)?;
    Ok(((p.post, p.author), ts, 1))
}

/// Decodes a post record.
pub fn decode_post(record: &Record) -> Result<(Post, u64), DecodeError> {
    json::<Post>(record, "post").map(|p| (p, p.ts))
}

/// The part of `rank` each of a user's `degree` out-edges carries,
/// `floor(rank · 85 / (100 · degree))`. In 128 bits, since `rank · 85` can pass 2^64; the share
/// itself is below `rank`.
///
/// ```
/// use kappa_examples::ranked_feed::share;
/// assert_eq!(share(1_000_000, 2), 425_000);
/// assert_eq!(share(u64::MAX, 1), 15_679_732_462_653_118_872); // rank · 85 is past 2^64
/// ```
pub fn share(rank: u64, degree: u64) -> u64 {
    let share = u128::from(rank) * 85 / (100 * u128::from(degree));
    u64::try_from(share).expect("a share is less than its rank")
}

/// A post's score, `(likes + 1) · rank`. In 128 bits, where it cannot overflow: both factors are
/// at most 2^64.
///
/// ```
/// use kappa_examples::ranked_feed::score;
/// assert_eq!(score(0, 150_000), 150_000);
/// assert_eq!(score(10_000_000, 2_000_000_000_000), 20_000_002_000_000_000_000); // past 2^64
/// ```
pub fn score(likes: u64, rank: u64) -> u128 {
    (u128::from(likes) + 1) * u128::from(rank)
}

/// Integer PageRank over `edges` (each present once), exactly [`ROUNDS`] rounds.
///
/// Every rank is at most 10^6 · n for n users in `edges`: the total starts at 10^6 · n, and a round
/// gives 150,000 · n plus at most 0.85 of the previous total. The shares are summed in a 64-bit
/// [`Diff`], so the ranks are exact for graphs of fewer than 9 · 10^12 users (10^6 · 9 · 10^12 <
/// 2^63); [`share`]'s product is taken in 128 bits.
///
/// Each round is a join and a sum. The sum is carried in differences (`explode` the share into the
/// diff, then `count_total`), so a changed share is one update `new − old` on its target instead of
/// a retraction and an insertion that a `reduce` would re-sum over all in-edges; the edges with
/// their source's out-degree are arranged once and shared by all twenty joins.
pub fn author_ranks<'s>(edges: Collection<'s, (u64, u64)>) -> Collection<'s, (u64, u64)> {
    let users = edges.clone().flat_map(|(u, v)| [u, v]).distinct_core::<isize>();
    let out_degree = edges.clone().map(|(u, _)| u).count_total();
    let edges_by_source =
        edges.join_map(out_degree, |&u, &v, &degree| (u, (v, degree as u64))).arrange_by_key_named("EdgesBySource");
    let base = users.clone().explode(|u| Some((u, 150_000isize)));
    let mut ranks = users.map(|u| (u, 1_000_000u64));
    // Exactly twenty rounds, unrolled: each is maintained incrementally.
    for _ in 0..ROUNDS {
        let shares = ranks
            .join_core(edges_by_source.clone(), |_u, &rank, &(v, degree)| Some((v, share(rank, degree))))
            .explode(|(v, share)| Some((v, Diff::try_from(share).expect("a share is below 2^63 (see above)"))));
        ranks = base.clone().concat(shares).count_total().map(|(v, sum)| (v, sum as u64));
    }
    ranks
}

/// The dataflow: follow pairs `(follower, followee)` (+1 follow, −1 unfollow), posts
/// `(post, author)` and like pairs `(user, post)` (+1 like, −1 unlike) in; feeds out.
pub fn ranked_feed<'s>(
    follows: Collection<'s, (u64, u64)>,
    posts: Collection<'s, (u64, u64)>,
    likes: Collection<'s, (u64, u64)>,
) -> Collection<'s, FeedEntry> {
    let edges = follows.threshold_total(|_pair, &net| isize::from(net > 0));
    let ranks = author_ranks(edges.clone());
    let post_author = posts.reduce(|_post, authors, out| out.push((*authors[0].0, 1)));
    let by_author = post_author.clone().map(|(post, author)| (author, post));
    let ranked = by_author.clone().join_map(ranks.clone(), |_author, &post, &rank| (post, rank));
    let unranked = by_author.antijoin(ranks.map(|(u, _)| u)).map(|(_author, post)| (post, 0u64));
    let post_likes = like_counts::like_counts(likes).map(|pl| (pl.post, pl.likes));
    // Score = (likes + 1) · rank, in 128 bits; posts without likes have none in `post_likes`.
    let scores = ranked
        .concat(unranked)
        .map(|(post, rank)| (post, (0u8, rank)))
        .concat(post_likes.map(|(post, likes)| (post, (1u8, likes))))
        .reduce(|_post, tagged, out| {
            let rank = tagged.iter().find(|((tag, _), _)| *tag == 0).map(|((_, r), _)| *r);
            let likes = tagged.iter().find(|((tag, _), _)| *tag == 1).map_or(0, |((_, l), _)| *l);
            if let Some(rank) = rank {
                out.push((score(likes, rank), 1));
            }
        });
    edges
        .map(|(follower, followee)| (followee, follower))
        .join_map(post_author.map(|(post, author)| (author, post)), |_author, &follower, &post| (post, follower))
        .join_map(scores, |&post, &follower, &score| (follower, (u128::MAX - score, post)))
        .reduce(|_user, candidates, out| {
            // Sorted by (MAX - score, post): highest score first, then smaller post id.
            for (position, ((inverse, post), _)) in candidates.iter().take(FEED_LEN).enumerate() {
                out.push(((position as u64 + 1, *post, u128::MAX - inverse), 1));
            }
        })
        .map(|(user, (position, post, score))| FeedEntry { user, position, post, score })
}

/// Runs the ranked feed over its three inputs into `sink`.
pub fn run<S: Sink<FeedEntry>>(
    cluster: &ClusterConfig,
    options: JobOptions,
    follows: Arc<dyn SourceFactory>,
    posts: Arc<dyn SourceFactory>,
    likes: Arc<dyn SourceFactory>,
    sink: S,
) -> kappa_engine::Result<JobReport> {
    let sources = Sources::new().with_shared(FOLLOWS, follows).with_shared(POSTS, posts).with_shared(LIKES, likes);
    kappa_engine::pipeline::run(&RankedFeed, cluster, options, sources, sink)
}

/// The follows input: `(follower, followee)` edges, +1 per follow and −1 per unfollow.
pub const FOLLOW_EDGES: Input<(u64, u64), DecodeError> = Input {
    name: FOLLOWS,
    topic: FOLLOWS,
    about: "JSON follow events {ts, follower, followee, kind: follow|unfollow}",
    decode: decode_edge,
    retention: Retention::Collapse,
};
/// The posts input: `(post, author)` pairs.
pub const POST_AUTHORS: Input<(u64, u64), DecodeError> = Input {
    name: POSTS,
    topic: POSTS,
    about: "JSON posts {ts, post, author}",
    decode: decode_post_author,
    retention: Retention::Collapse,
};
/// The likes input, as like counts reads it.
pub const LIKE_PAIRS: Input<(u64, u64), DecodeError> = Input { name: LIKES, topic: LIKES, ..like_counts::LIKES };

/// The ranked feed as a [`Pipeline`]: `kappa replay --pipeline ranked-feed`.
#[derive(Clone, Copy, Debug, Default)]
pub struct RankedFeed;

impl Pipeline for RankedFeed {
    type Output = FeedEntry;
    fn name(&self) -> &str {
        "ranked-feed"
    }
    fn about(&self) -> &str {
        "per user, the ten best posts of followed authors by integer PageRank"
    }
    fn inputs(&self) -> Vec<InputInfo> {
        vec![FOLLOW_EDGES.info(), POST_AUTHORS.info(), LIKE_PAIRS.info()]
    }
    fn output_about(&self) -> &str {
        "{user, position, post, score}, keyed by (user, position)"
    }
    fn build<'s>(&self, inputs: &mut Inputs<'s, '_>) -> kappa_engine::Result<Collection<'s, FeedEntry>> {
        let follows = inputs.read(&FOLLOW_EDGES)?;
        let posts = inputs.read(&POST_AUTHORS)?;
        let likes = inputs.read(&LIKE_PAIRS)?;
        Ok(ranked_feed(follows, posts, likes))
    }
}

/// The batch reference: PageRank by the definition over the edges, in plain Rust.
pub fn reference_ranks(edges: &BTreeSet<(u64, u64)>) -> BTreeMap<u64, u64> {
    let mut out_degree: BTreeMap<u64, u64> = BTreeMap::new();
    let mut ranks: BTreeMap<u64, u64> = BTreeMap::new();
    for &(u, v) in edges {
        *out_degree.entry(u).or_default() += 1;
        ranks.insert(u, 1_000_000);
        ranks.insert(v, 1_000_000);
    }
    for _ in 0..ROUNDS {
        let mut next: BTreeMap<u64, u64> = ranks.keys().map(|&u| (u, 150_000)).collect();
        for &(u, v) in edges {
            *next.get_mut(&v).expect("v is a user") += share(ranks[&u], out_degree[&u]);
        }
        ranks = next;
    }
    ranks
}

/// The batch reference for the whole pipeline over the given events (those of the chosen time).
pub fn reference<'a>(
    follows: impl IntoIterator<Item = &'a Follow>,
    posts: impl IntoIterator<Item = &'a Post>,
    likes: impl IntoIterator<Item = &'a Like>,
) -> BTreeSet<FeedEntry> {
    let mut net: BTreeMap<(u64, u64), i64> = BTreeMap::new();
    for f in follows {
        *net.entry((f.follower, f.followee)).or_default() += if f.kind == FollowKind::Follow { 1 } else { -1 };
    }
    let edges: BTreeSet<(u64, u64)> = net.into_iter().filter(|(_, n)| *n > 0).map(|(e, _)| e).collect();
    let ranks = reference_ranks(&edges);
    let mut author_of: BTreeMap<u64, u64> = BTreeMap::new();
    for p in posts {
        let a = author_of.entry(p.post).or_insert(p.author);
        *a = (*a).min(p.author);
    }
    let like_counts = like_counts::reference(likes);
    let score_of = |post: u64, author: u64| {
        ranks.get(&author).map_or(0, |&r| score(like_counts.get(&post).copied().unwrap_or(0), r))
    };
    let mut posts_by: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (&post, &author) in &author_of {
        posts_by.entry(author).or_default().push(post);
    }
    let mut feeds = BTreeSet::new();
    let followers: BTreeSet<u64> = edges.iter().map(|(u, _)| *u).collect();
    for user in followers {
        let mut candidates: Vec<(u128, u64)> = edges
            .range((user, 0)..=(user, u64::MAX))
            .flat_map(|&(_, followee)| posts_by.get(&followee).into_iter().flatten().map(move |&post| (post, followee)))
            .map(|(post, author)| (score_of(post, author), post))
            .collect();
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (i, (score, post)) in candidates.into_iter().take(FEED_LEN).enumerate() {
            feeds.insert(FeedEntry { user, position: i as u64 + 1, post, score });
        }
    }
    feeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_the_definition_on_a_small_graph() {
        // 1 → 2, 1 → 3, 2 → 3; 3 has no out-edges (its mass is dropped).
        let edges = BTreeSet::from([(1, 2), (1, 3), (2, 3)]);
        let ranks = reference_ranks(&edges);
        // Round 1: r(1) = 150,000; r(2) = 150,000 + 1,000,000·85/200 = 575,000;
        // r(3) = 150,000 + 425,000 + 850,000 = 1,425,000. Later rounds: 1 stays 150,000,
        // 2 = 150,000 + 63,750 = 213,750, 3 = 150,000 + 63,750 + floor(213,750·85/100) = 395,437.
        assert_eq!(ranks, BTreeMap::from([(1, 150_000), (2, 213_750), (3, 395_437)]));
    }

    #[test]
    fn shares_and_scores_of_the_largest_values_are_exact() {
        // rank · 85 passes 2^64 here; the share is still exact.
        assert_eq!(share(u64::MAX, 1), (u128::from(u64::MAX) * 85 / 100) as u64);
        assert_eq!(share(u64::MAX, 7), (u128::from(u64::MAX) * 85 / 700) as u64);
        assert_eq!(share(1_000_000, 3), 283_333);
        // A score past 2^64 (which `(likes + 1) · rank` in u64 would wrap), and the largest.
        assert_eq!(score(10_000_000, 2_000_000_000_000), 20_000_002_000_000_000_000);
        assert_eq!(score(u64::MAX, u64::MAX), (1u128 << 64) * u128::from(u64::MAX));
        assert_eq!(score(0, 0), 0);
    }
}
