//! Fuzzes the `.txnindex` parser of the Kafka log directory layout: any bytes must parse or fail
//! with a named error, never panic.
//!
//! Run with (from `replay/`): `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz txn_index -- -max_total_time=600`
#![no_main]

use kappa_replay::layout::parse_txn_index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(aborted) = parse_txn_index("fuzz.txnindex", data) {
        assert_eq!(aborted.len() * 34, data.len());
        assert!(aborted.iter().all(|a| 0 <= a.first && a.first <= a.last));
    }
});
