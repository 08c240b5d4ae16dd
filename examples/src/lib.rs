//! Kappa's showcase pipelines and the `kappa` command.
//!
//! - [`like_counts`]: per post, how many users like it now, from a stream of likes and unlikes.
//! - [`ranked_feed`]: per user, the best posts of followed authors by integer PageRank.
//! - [`fraud_alerts`]: rings of cards sharing devices (iteration to a fixpoint), over a one-hour
//!   window by retraction.
//! - [`generator`]: synthetic, seeded inputs for the demo, the tests and the benches.
//! - The command line lives in `kappa-runner`; `src/bin/kappa.rs` is its registry of these pipelines.
//!
//! Each pipeline module holds the dataflow and, beside it, a plain-Rust batch reference of the
//! same definition (no differential dataflow in it) that the demo and the property tests compare
//! against.
//!
//! # Examples
//!
//! ```
//! use kappa_engine::{ClusterConfig, JobOptions, MemorySink, MemorySource, PartitionId, Record};
//! use kappa_examples::like_counts::{self, PostLikes};
//!
//! let likes = [r#"{"ts":1000,"user":1,"post":7,"kind":"like"}"#, r#"{"ts":2000,"user":2,"post":7,"kind":"like"}"#,
//!              r#"{"ts":3000,"user":1,"post":7,"kind":"unlike"}"#];
//! let records = likes.iter().enumerate()
//!     .map(|(i, v)| Record { offset: i as i64, timestamp: None, key: None, value: Some(v.as_bytes().to_vec().into()) })
//!     .collect();
//! let source = MemorySource::new(vec![(PartitionId::new("likes", 0), records)]);
//! let sink = MemorySink::new();
//! like_counts::run(&ClusterConfig::threads(1), JobOptions::default(), std::sync::Arc::new(source), sink.clone()).unwrap();
//! assert_eq!(sink.accumulated(), vec![(PostLikes { post: 7, likes: 1 }, 1)]);
//! ```
#![forbid(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod decode;
pub mod demo;
pub mod fraud_alerts;
pub mod generator;

pub mod like_counts;
pub mod nexmark;

pub mod ranked_feed;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
