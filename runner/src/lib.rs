//! Runs Kappa pipelines: the `kappa` command as a library.
//!
//! This crate has one job the others do not: turning any set of [`Pipeline`]s into the whole
//! command line, `archive write|inspect|verify`, `replay` (every flag: `--topic INPUT=TOPIC`,
//! `--archive`, `--then-live`, `--output FILE|kafka:TOPIC`, `--upsert`, `--checkpoint`,
//! `--backfill-granularity`, cluster flags, `--on-bad-record`, progress bars) and `pipelines`.
//! The engine knows no Kafka and replay knows no pipelines, so neither can hold it; the shipped
//! `kappa` binary (in `kappa-examples`) is [`main_with`] over the showcase pipelines plus `demo`.
//!
//! Where to read: [`cli`] (the subcommands), [`job`] (opening inputs with the archive→live handoff,
//! the output registry, checkpoint settings, cluster flags), [`progress`] (bars on stderr).
//!
//! # Examples
//!
//! A program of its own pipelines, with the whole command:
//!
//! ```no_run
//! # use kappa_engine::pipeline::DynPipeline;
//! # fn my_pipelines() -> Vec<&'static dyn DynPipeline> { Vec::new() }
//! fn main() -> std::process::ExitCode {
//!     kappa_runner::main(&my_pipelines())
//! }
//! ```
//!
//! [`Pipeline`]: kappa_engine::Pipeline
#![forbid(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod cli;
pub mod job;
pub mod progress;

pub use cli::{main, main_with, Extra};
