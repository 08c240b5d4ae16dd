//! `page-views`: the whole `kappa` command (archive tools, replay, pipelines) for this crate's
//! pipeline, and nothing else to write.
//!
//! Run with: `cargo run --release -p kappa-template --bin page-views -- --help`

use std::process::ExitCode;

fn main() -> ExitCode {
    kappa_runner::main(&[&kappa_template::PageViews])
}
