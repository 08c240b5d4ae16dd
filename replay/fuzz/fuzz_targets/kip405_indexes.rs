//! Fuzzes the reading of a KIP-405 `.indexes` object: the manifest's range of the offset index
//! (any position and size) within an object of any bytes, then the offset index itself. Both must
//! succeed or fail with a named error, never panic or read outside the object.
//!
//! Run with (from `replay/`): `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz kip405_indexes -- -max_total_time=600`
#![no_main]

use kappa_replay::layout::{offset_index_last, IndexRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes are the manifest's `position` and `size` (as the int32s Java writes); the
    // rest is the `.indexes` object.
    let Some((range, indexes)) = data.split_first_chunk::<8>() else { return };
    let position = i64::from(i32::from_be_bytes([range[0], range[1], range[2], range[3]]));
    let size = i64::from(i32::from_be_bytes([range[4], range[5], range[6], range[7]]));
    let Ok(bytes) = (IndexRange { position, size }).bytes_in("fuzz.rsm-manifest", indexes.len() as u64) else {
        return;
    };
    let index = &indexes[bytes.start as usize..bytes.end as usize];
    if let Ok(Some((_, at))) = offset_index_last("fuzz.indexes", index) {
        assert!(at <= i32::MAX as u32);
    }
});
