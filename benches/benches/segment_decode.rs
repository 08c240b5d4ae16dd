//! Decoding RecordBatch v2 segments (decompression, CRC-32C check and record framing), records
//! per second, uncompressed and in every codec (batches of 1000 like records, as the replay
//! benchmark's archive).
//!
//! Run with: `cargo bench -p kappa-benches --bench segment_decode`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kappa_benches::like_segment_with;
use kappa_replay::segment::compression::CODECS;

fn decode(c: &mut Criterion) {
    let records = 100_000;
    let mut group = c.benchmark_group("segment_decode");
    group.throughput(Throughput::Elements(records as u64));
    for codec in CODECS {
        let segment = like_segment_with(records, 1000, codec);
        // The uncompressed variant keeps its historical name (papers/results/segment_decode.txt).
        let name = match codec.name() {
            "none" => "100k_like_records".to_string(),
            other => format!("100k_like_records_{other}"),
        };
        group.bench_function(name, |b| {
            let mut out = Vec::with_capacity(records);
            b.iter(|| {
                out.clear();
                kappa_replay::segment::decode_segment("bench", &segment, 0, &mut out).expect("decodes");
                assert_eq!(out.len(), records);
            })
        });
    }
    group.finish();
}

mod group {
    #![allow(missing_docs)] // criterion's macro generates an undocumented function
    use super::*;
    criterion_group!(benches, decode);
}
use group::benches;
criterion_main!(benches);
