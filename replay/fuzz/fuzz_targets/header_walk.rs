//! Fuzzes the batch-header walk that finds where a segment's batches end without decoding them
//! (the Kafka log directory's and Tansu's end offsets, KIP-405 tails, and the check that a
//! segment reaches the next): any bytes must walk or fail with a named error, never panic or
//! overflow an offset.
//!
//! Run with (from `replay/`): `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz header_walk -- -max_total_time=600`
#![no_main]

use kappa_replay::segment::extent::{batch_extent, walk_batches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mode, body) = data.split_first().unwrap_or((&0, data));
    let _ = batch_extent("fuzz", body, u64::MAX - u64::from(*mode));
    if let Ok(Some(walk)) = walk_batches("fuzz", body, u64::from(*mode), mode & 1 == 1) {
        assert!(walk.first_base <= walk.next_offset && walk.batches > 0);
    }
});
