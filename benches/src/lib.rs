//! Benchmarks behind the figures in `papers/`.
//!
//! Criterion benches for hot paths live in `benches/` (run `cargo bench -p kappa-benches`); this
//! library holds the inputs they share.
#![forbid(missing_docs)]

#[cfg(feature = "dbsp")]
pub mod peer;

use bytes::Bytes;
use kappa_engine::Record;

/// A segment of `n` like-sized records (about 60-byte JSON values) in batches of `batch`.
pub fn like_segment(n: usize, batch: usize) -> Bytes {
    like_segment_with(n, batch, kappa_replay::segment::compression::Codec::None)
}

/// [`like_segment`] with batches compressed by `codec`.
pub fn like_segment_with(n: usize, batch: usize, codec: kappa_replay::segment::compression::Codec) -> Bytes {
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
        kappa_replay::segment::encode_batch_with(chunk, codec, &mut out);
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

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes; 0 elsewhere.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(String::from))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// A like archive in Kappa's layout at `url`: the generated stream of `records` like events over
/// `partitions` partitions of topic `likes`, in segments of `segment_records` records, batches of
/// 1000 compressed with `codec`. `users_posts` overrides the generator's key space (users,
/// posts). Returns the segments (key and bytes) as written, and the records of each partition.
pub fn write_like_archive(
    url: &str,
    records: usize,
    partitions: i32,
    segment_records: usize,
    codec: kappa_replay::segment::Codec,
    users_posts: Option<(u64, u64)>,
) -> anyhow::Result<LikeArchive> {
    use kappa_examples::generator::{like_stream, LikeStreamConfig};
    use object_store::ObjectStoreExt;
    let mut config = LikeStreamConfig { partitions, ..LikeStreamConfig::new(records) };
    if let Some((users, posts)) = users_posts {
        config.users = users;
        config.posts = posts;
    }
    let events = like_stream(&config);
    let mut per_partition: Vec<Vec<Record>> = vec![Vec::new(); partitions as usize];
    for (p, like) in &events {
        let log = &mut per_partition[*p as usize];
        log.push(Record {
            offset: log.len() as i64,
            timestamp: Some(like.ts as i64),
            key: Some(Bytes::from(like.user.to_string())),
            value: Some(Bytes::from(serde_json::to_vec(like)?)),
        });
    }
    drop(events);
    let archive = kappa_replay::Archive::open(url)?;
    let mut segments = Vec::new();
    for (p, log) in per_partition.iter().enumerate() {
        for chunk in log.chunks(segment_records.max(1)) {
            let mut bytes = Vec::new();
            for batch in chunk.chunks(1000) {
                kappa_replay::segment::encode_batch_with(batch, codec, &mut bytes);
            }
            let (base, next) = (chunk[0].offset, chunk[chunk.len() - 1].offset + 1);
            let key = kappa_replay::KappaLayout::segment_key(&archive, "likes", p as i32, base, next);
            segments.push((key, Bytes::from(bytes)));
        }
    }
    for (key, bytes) in &segments {
        kappa_replay::archive::runtime().block_on(archive.store.put(key, bytes.clone().into()))?;
    }
    Ok(LikeArchive { segments, partitions: per_partition })
}

/// What [`write_like_archive`] wrote.
pub struct LikeArchive {
    /// Segment objects: key and bytes.
    pub segments: Vec<(object_store::path::Path, Bytes)>,
    /// The records, per partition.
    pub partitions: Vec<Vec<Record>>,
}
