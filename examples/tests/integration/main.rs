//! Integration tests on real components: a Tansu broker, moto's S3 server, the `kappa` binary.

mod handoff;
mod harness;
mod replay;
