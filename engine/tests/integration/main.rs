//! The engine's guarantees off the happy path, through its public API: reruns over more input,
//! restarts after the backfill grew, and idle partitions.

mod common;
mod idle;
mod reruns;
