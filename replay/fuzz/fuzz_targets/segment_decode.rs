//! Fuzzes the segment decoder: any bytes, plain or as Tansu-style relative offsets, with an
//! aborted-transaction list, must decode or fail with an error, never panic or run away with memory.
//!
//! Run with (from `replay/`): `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz segment_decode -- -max_total_time=600`
#![no_main]

use bytes::Bytes;
use kappa_replay::segment::{decode_segment_with, AbortedTxn, DecodeOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mode, body) = data.split_first().unwrap_or((&0, data));
    let bytes = Bytes::copy_from_slice(body);
    let aborted = [AbortedTxn { producer_id: 1, first: 0, last: 1 << 20 }];
    let options = DecodeOptions {
        from: Some(i64::from(*mode & 0x0f)),
        base: (mode & 0x10 != 0).then_some(1_000),
        aborted: if mode & 0x20 != 0 { &aborted } else { &[] },
    };
    let mut out = Vec::new();
    let _ = decode_segment_with("fuzz", &bytes, &options, &mut out);
});
