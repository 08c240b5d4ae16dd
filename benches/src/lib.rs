//! Benchmarks behind the figures in `papers/`.
//!
//! Criterion benches for hot paths live in `benches/` (run `cargo bench -p kappa-benches`); this
//! library holds the inputs they share.
#![forbid(missing_docs)]

use bytes::Bytes;
use kappa_engine::Record;

/// A segment of `n` like-sized records (about 60-byte JSON values) in batches of `batch`.
pub fn like_segment(n: usize, batch: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            offset: i as i64,
            timestamp: Some(1_700_000_000_000 + i as i64),
            key: Some(Bytes::from((i % 1000).to_string())),
            value: Some(Bytes::from(format!(
                r#"{{"ts":{},"user":{},"post":{},"kind":"like"}}"#,
                1_700_000_000_000u64 + i as u64,
                i % 5000,
                i % 300
            ))),
        })
        .collect();
    let mut out = Vec::new();
    for chunk in records.chunks(batch.max(1)) {
        kappa_replay::segment::encode_batch(chunk, &mut out);
    }
    Bytes::from(out)
}
