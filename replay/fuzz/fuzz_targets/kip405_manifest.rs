//! Fuzzes the KIP-405 manifest parser and its chunk index: any bytes, as a manifest describing a
//! `.log` object of any size, must parse or fail with a named error, never panic, and never build
//! anything larger than the object it describes.
//!
//! Run with (from `replay/`): `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz kip405_manifest -- -max_total_time=600`
#![no_main]

use kappa_replay::layout::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the `.log` object's size; the rest is the manifest.
    let (size, body) = match data {
        [a, b, rest @ ..] => (u64::from(u16::from_be_bytes([*a, *b])), rest),
        _ => (0, data),
    };
    let Ok(manifest) = Manifest::parse("fuzz.rsm-manifest", body) else { return };
    let _ = manifest.next_offset("fuzz.rsm-manifest", 0);
    if let Ok(chunks) = manifest.chunks("fuzz.rsm-manifest", size) {
        assert!(chunks.len() as u64 <= size.max(1), "a chunk index larger than its object");
        let _ = chunks.untransform("fuzz.log", &bytes::Bytes::from(vec![0u8; size as usize]));
    }
});
