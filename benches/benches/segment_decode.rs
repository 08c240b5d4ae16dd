//! Decoding RecordBatch v2 segments (CRC-32C check plus record parsing), records per second.
//!
//! Run with: `cargo bench -p kappa-benches --bench segment_decode`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kappa_benches::like_segment;

fn decode(c: &mut Criterion) {
    let records = 100_000;
    let segment = like_segment(records, 1000);
    let mut group = c.benchmark_group("segment_decode");
    group.throughput(Throughput::Elements(records as u64));
    group.bench_function("100k_like_records", |b| {
        let mut out = Vec::with_capacity(records);
        b.iter(|| {
            out.clear();
            kappa_replay::segment::decode_segment("bench", &segment, 0, &mut out).expect("decodes");
            assert_eq!(out.len(), records);
        })
    });
    group.finish();
}

mod group {
    #![allow(missing_docs)] // criterion's macro generates an undocumented function
    use super::*;
    criterion_group!(benches, decode);
}
use group::benches;
criterion_main!(benches);
