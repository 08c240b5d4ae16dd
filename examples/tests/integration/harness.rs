//! The `kappa` binary for the integration tests, beside the real servers of `kappa-testkit`
//! (re-exported here, so every test names one module).

use std::process::{Command, Output};

pub use kappa_testkit::{consume_committed, free_port, manifests, unique, Moto, Outages, Postgres, Redis, Tansu};

/// A restartable `kappa` job run as an operator would: the same command again after every crash.
pub fn kappa_job(args: Vec<String>, env: Vec<(String, String)>) -> kappa_testkit::Job {
    kappa_testkit::Job { binary: env!("CARGO_BIN_EXE_kappa").into(), args, env }
}

/// Runs the `kappa` binary with `args` (and extra environment), returning its output.
pub fn kappa(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kappa"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run kappa")
}

/// Runs `kappa` and panics with its stderr unless it succeeds.
pub fn kappa_ok(args: &[&str], env: &[(&str, String)]) -> Output {
    let out = kappa(args, env);
    assert!(out.status.success(), "kappa {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    out
}
