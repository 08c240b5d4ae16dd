//! Integration tests on real components: a Tansu broker, moto's S3 server, the `kappa` binary.

mod cluster;
mod databases;
mod exactly_once;
mod handoff;
mod harness;
mod kafka_source;
mod nexmark;
mod replay;
mod reruns;
mod s3_outage;
mod serving;
mod tansu_s3;
