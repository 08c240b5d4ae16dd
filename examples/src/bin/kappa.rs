//! The `kappa` command: Kappa's runner over the showcase pipelines, plus `kappa demo`.
//!
//! Run with: `cargo run --release -- demo` (or `-- --help`).

use std::process::ExitCode;

use clap::{Args, FromArgMatches};
use kappa_engine::pipeline::DynPipeline;
use kappa_examples::{demo, fraud_alerts, like_counts, nexmark, ranked_feed};

/// Every pipeline the command runs. This is the registry: a new pipeline is one more entry.
fn pipelines() -> Vec<&'static dyn DynPipeline> {
    let mut all: Vec<&'static dyn DynPipeline> =
        vec![&like_counts::LikeCounts, &ranked_feed::RankedFeed, &fraud_alerts::FraudAlerts];
    all.extend(nexmark::PIPELINES.iter().map(|p| p as &'static dyn DynPipeline));
    all
}

fn main() -> ExitCode {
    let demo = kappa_runner::Extra {
        command: demo::DemoArgs::augment_args(clap::Command::new("demo"))
            .about("Run the whole idea end to end on an in-process mock Kafka cluster, and verify the result"),
        run: |args| demo::run(demo::DemoArgs::from_arg_matches(args)?),
    };
    kappa_runner::main_with(&pipelines(), vec![demo])
}
