//! Like counts: per post, how many users like it now.
//!
//! Input: topic `likes`, JSON values `{"ts":<ms>,"user":<u64>,"post":<u64>,"kind":"like"|"unlike"}`.
//! A like adds +1 to the pair (user, post), an unlike −1; a user likes a post while the pair's
//! net count is positive (so an unlike before any like makes the pair negative, and a later like
//! brings it back to zero, not to "liked"). Output data `{"post":<u64>,"likes":<u64>}`, one row per
//! post with at least one like.

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::operators::{CountTotal, ThresholdTotal};
use kappa_engine::{
    ClusterConfig, Collection, Context, Diff, Input, InputInfo, Inputs, JobOptions, JobReport, Pipeline, Record,
    Retention, Sink, SourceFactory, Sources,
};
use serde::{Deserialize, Serialize};

use crate::decode::{json, DecodeError};

/// The input's name in the pipeline.
pub const INPUT: &str = "likes";

/// Like or unlike.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// +1 to the pair.
    Like,
    /// −1 to the pair.
    Unlike,
}

/// One input event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Like {
    /// Event time, ms.
    pub ts: u64,
    /// Who.
    pub user: u64,
    /// Which post.
    pub post: u64,
    /// Like or unlike.
    pub kind: Kind,
}

/// One output row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PostLikes {
    /// The post.
    pub post: u64,
    /// How many users like it now.
    pub likes: u64,
}

impl kappa_engine::Keyed for PostLikes {
    fn key(&self) -> serde_json::Value {
        serde_json::json!({ "post": self.post })
    }
}

/// Decodes a record's JSON value; the event time is its `ts`.
pub fn decode(record: &Record) -> Result<(Like, u64), DecodeError> {
    let like: Like = json(record, "like event")?;
    Ok((like, like.ts))
}

/// Decodes a record into the pair it changes: `(user, post)` with +1 for a like and −1 for an
/// unlike. This is the form a checkpoint keeps: a like and its unlike cancel.
pub fn decode_pair(record: &Record) -> Result<((u64, u64), u64, Diff), DecodeError> {
    let (like, ts) = decode(record)?;
    Ok(((like.user, like.post), ts, if like.kind == Kind::Like { 1 } else { -1 }))
}

/// Reads the likes input of a pipeline: `(user, post)` pairs, +1 per like and −1 per unlike.
pub fn read_pairs<'s>(ctx: &mut Context<'s>, name: &str) -> kappa_engine::Result<Collection<'s, (u64, u64)>> {
    ctx.durable_input(name, decode_pair, Retention::Collapse)
}

/// The dataflow: `(user, post)` pairs in (+1 per like, −1 per unlike), per-post like counts out.
pub fn like_counts(pairs: Collection<'_, (u64, u64)>) -> Collection<'_, PostLikes> {
    pairs
        // A pair counts once while its net is positive.
        .threshold_total(|_pair, &net| isize::from(net > 0))
        .map(|(_user, post)| post)
        .count_total()
        .map(|(post, users)| PostLikes { post, likes: users as u64 })
}

/// The likes input: `(user, post)` pairs, +1 per like and −1 per unlike.
pub const LIKES: Input<(u64, u64), DecodeError> = Input {
    name: INPUT,
    topic: INPUT,
    about: "JSON like events {ts, user, post, kind: like|unlike}",
    decode: decode_pair,
    retention: Retention::Collapse,
};

/// Like counts as a [`Pipeline`]: `kappa replay --pipeline like-counts`.
#[derive(Clone, Copy, Debug, Default)]
pub struct LikeCounts;

impl Pipeline for LikeCounts {
    type Output = PostLikes;
    fn name(&self) -> &str {
        "like-counts"
    }
    fn about(&self) -> &str {
        "per post, how many users like it now"
    }
    fn inputs(&self) -> Vec<InputInfo> {
        vec![LIKES.info()]
    }
    fn output_about(&self) -> &str {
        "{post, likes}, keyed by post"
    }
    fn build<'s>(&self, inputs: &mut Inputs<'s, '_>) -> kappa_engine::Result<Collection<'s, PostLikes>> {
        Ok(like_counts(inputs.read(&LIKES)?))
    }
}

/// Runs like counts over `likes` (read as input [`INPUT`]) into `sink`.
pub fn run<S: Sink<PostLikes>>(
    cluster: &ClusterConfig,
    options: JobOptions,
    likes: Arc<dyn SourceFactory>,
    sink: S,
) -> kappa_engine::Result<JobReport> {
    kappa_engine::pipeline::run(&LikeCounts, cluster, options, Sources::new().with_shared(INPUT, likes), sink)
}

/// The batch reference: like counts over `likes`, by the definition, in plain Rust.
pub fn reference<'a>(likes: impl IntoIterator<Item = &'a Like>) -> BTreeMap<u64, u64> {
    let mut net: BTreeMap<(u64, u64), i64> = BTreeMap::new();
    for like in likes {
        *net.entry((like.user, like.post)).or_default() += if like.kind == Kind::Like { 1 } else { -1 };
    }
    let mut likes_per_post = BTreeMap::new();
    for ((_user, post), n) in net {
        if n > 0 {
            *likes_per_post.entry(post).or_default() += 1;
        }
    }
    likes_per_post
}

/// Sums an output's diffs per row into the final result, as [`reference()`] gives it. Fails if a row
/// ends with a multiplicity other than 0 or 1, which a correct run never produces.
pub fn final_result(updates: impl IntoIterator<Item = (PostLikes, isize)>) -> Result<BTreeMap<u64, u64>, String> {
    let mut sums: BTreeMap<PostLikes, isize> = BTreeMap::new();
    for (row, diff) in updates {
        *sums.entry(row).or_default() += diff;
    }
    let mut out = BTreeMap::new();
    for (row, n) in sums {
        match n {
            0 => {}
            1 => {
                if out.insert(row.post, row.likes).is_some() {
                    return Err(format!("post {} has two rows", row.post));
                }
            }
            n => return Err(format!("row {row:?} has multiplicity {n}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(offset: i64, value: &str) -> Record {
        Record { offset, timestamp: None, key: None, value: Some(Bytes::copy_from_slice(value.as_bytes())) }
    }

    #[test]
    fn malformed_values_are_rejected_with_a_reason() {
        for bad in ["{", r#"{"ts":1,"user":1,"kind":"like"}"#, r#"{"ts":1,"user":1,"post":2,"kind":"love"}"#] {
            assert!(decode(&rec(0, bad)).is_err(), "{bad} should be rejected");
        }
        assert!(decode(&Record { offset: 0, timestamp: None, key: None, value: None }).is_err());
        let ok = decode(&rec(0, r#"{"ts":5,"user":1,"post":2,"kind":"unlike","extra":true}"#)).expect("decodes");
        assert_eq!(ok, (Like { ts: 5, user: 1, post: 2, kind: Kind::Unlike }, 5));
    }

    #[test]
    fn reference_counts_pairs_with_positive_net_only() {
        let l = |user, post, kind| Like { ts: 0, user, post, kind };
        let events = [
            l(1, 10, Kind::Like),
            l(1, 10, Kind::Like),
            l(1, 10, Kind::Unlike), // still +1
            l(2, 10, Kind::Unlike),
            l(2, 10, Kind::Like), // net 0: not liked
            l(3, 11, Kind::Like),
            l(3, 11, Kind::Unlike),
        ];
        assert_eq!(reference(&events), BTreeMap::from([(10, 1)]));
    }
}
