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

/// The machine a figure came from: cores and CPU model (and memory, with `with_memory`).
pub fn machine(with_memory: bool) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mut text = format!("{cores} cores ({model})");
    if with_memory {
        let gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / (1 << 20));
        text.push_str(&format!(", {gib} GiB"));
    }
    text
}
