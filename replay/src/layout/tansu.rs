//! The layout a Tansu broker writes with `--storage-engine s3://BUCKET/`:
//!
//! ```text
//! {prefix}/clusters/{cluster}/meta.json
//! {prefix}/clusters/{cluster}/topics/{topic}/partitions/{partition:010}/watermark.json
//! {prefix}/clusters/{cluster}/topics/{topic}/partitions/{partition:010}/records/{base_offset:020}.batch
//! ```
//!
//! Each `.batch` object is one RecordBatch exactly as the producer sent it (so compressed with the
//! producer's codec), whose own base offset field is 0: the real base offset is the key's. A
//! segment's end is the next segment's base offset; the last segment's end is read from its batch
//! header (a 61-byte ranged read). Tansu's offsets have no gaps (each batch takes the offsets after
//! the previous one's, transaction markers included), so a batch that ends before the next key
//! means the object between is missing: replay refuses that when it reads the batch
//! ([`Transform::MustReach`]), and `verify` lists it.

use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;

use super::{ArchiveLayout, Listing, MustReach, SegmentRef, Transform};
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::segment::extent::{batch_extent, HEADER_LEN};

/// See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct TansuLayout {
    /// The cluster to read; `None` means the archive's only one.
    pub cluster: Option<String>,
}

impl TansuLayout {
    async fn cluster(&self, archive: &Archive) -> Result<String> {
        if let Some(c) = &self.cluster {
            return Ok(c.clone());
        }
        let dir = archive.key("clusters");
        let dirs = archive.list_dirs(&dir).await?;
        let clusters: Vec<String> = dirs;
        match clusters.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(Error::Inconsistent { object: dir.to_string(), reason: "holds no Tansu cluster".into() }),
            several => Err(Error::Inconsistent {
                object: dir.to_string(),
                reason: format!("holds several Tansu clusters ({}): choose one with --cluster", several.join(", ")),
            }),
        }
    }

    fn partition_dir(archive: &Archive, cluster: &str, topic: &str, partition: i32) -> Path {
        archive.key(&format!("clusters/{cluster}/topics/{topic}/partitions/{partition:010}/records"))
    }
}

impl ArchiveLayout for TansuLayout {
    fn name(&self) -> &'static str {
        "tansu"
    }

    fn partitions<'a>(&'a self, archive: &'a Archive, topic: &'a str) -> BoxFuture<'a, Result<Vec<i32>>> {
        async move {
            let cluster = self.cluster(archive).await?;
            let dir = archive.key(&format!("clusters/{cluster}/topics/{topic}/partitions"));
            archive.list_numbered_dirs(&dir).await
        }
        .boxed()
    }

    fn list<'a>(&'a self, archive: &'a Archive, topic: &'a str, partition: i32) -> BoxFuture<'a, Result<Listing>> {
        async move {
            let cluster = self.cluster(archive).await?;
            let dir = Self::partition_dir(archive, &cluster, topic, partition);
            let objects = archive.list_objects(&dir).await?;
            let mut found = Vec::new();
            for meta in objects {
                let name = meta.location.filename().unwrap_or_default();
                let base = name.strip_suffix(".batch").and_then(|b| b.parse::<i64>().ok()).filter(|b| *b >= 0);
                let Some(base) = base else {
                    return Err(Error::InvalidKey {
                        object: meta.location.to_string(),
                        reason: "not a Tansu batch key ({base_offset:020}.batch, base offset at least 0)".into(),
                    });
                };
                found.push((base, meta));
            }
            found.sort_by_key(|(base, _)| *base);
            let mut out: Vec<SegmentRef> = Vec::with_capacity(found.len());
            for (i, (base, meta)) in found.iter().enumerate() {
                let (next_offset, transform) = match found.get(i + 1) {
                    // Tansu gives each batch the offsets after the previous batch's (its high
                    // watermark moves by lastOffsetDelta + 1, markers included), so a batch that
                    // ends before the next key means a missing object; only its header shows that.
                    Some((next, next_meta)) => (
                        *next,
                        Transform::MustReach(std::sync::Arc::new(MustReach {
                            inner: Transform::None,
                            topic: topic.to_string(),
                            partition,
                            base_offset: *base,
                            relative: true,
                            next_offset: *next,
                            next_object: next_meta.location.to_string(),
                        })),
                    ),
                    None => (last_batch_end(archive, &meta.location, *base, meta.size).await?, Transform::None),
                };
                if next_offset <= *base {
                    return Err(Error::Inconsistent {
                        object: meta.location.to_string(),
                        reason: format!("ends at offset {next_offset}, before it starts ({base})"),
                    });
                }
                out.push(SegmentRef {
                    key: meta.location.clone(),
                    base_offset: *base,
                    next_offset,
                    size: meta.size,
                    relative_offsets: true,
                    aborted: Default::default(),
                    transform,
                    note: None,
                });
            }
            Ok(Listing { segments: out, holes: Vec::new() })
        }
        .boxed()
    }
}

/// The offset after the batch in the Tansu object `key` (base offset `base` from its key, `size`
/// bytes), from its header: one 61-byte ranged read.
async fn last_batch_end(archive: &Archive, key: &Path, base: i64, size: u64) -> Result<i64> {
    let header = archive.fetch_range(key, 0..size.min(HEADER_LEN as u64)).await?;
    let extent = batch_extent(key.as_ref(), &header, 0)?;
    // The header's offsets are relative to the key's (its base offset field is 0).
    let span = extent.next_offset - extent.base_offset; // both checked by `batch_extent`: 1..=2^31
    base.checked_add(span).ok_or_else(|| Error::InvalidKey {
        object: key.to_string(),
        reason: format!("base offset {base} plus the batch's {span} offsets overflows a 64-bit offset"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::conformance::{check_layout, history};
    use crate::segment::{encode_batch_with, Codec};
    use kappa_engine::Record;
    use object_store::ObjectStoreExt;

    #[test]
    fn tansu_layout_conforms() {
        let archive = Archive::open_layout("memory://conformance-tansu", Some("tansu"), None).expect("opens");
        let (mut victim, mut missing) = (None, None);
        for (p, records) in history() {
            // One batch per object, offsets relative to the key, as Tansu writes them.
            for (n, chunk) in records.chunks(7).enumerate() {
                let base = chunk[0].offset;
                let relative: Vec<Record> =
                    chunk.iter().map(|r| Record { offset: r.offset - base, ..r.clone() }).collect();
                let mut bytes = Vec::new();
                encode_batch_with(&relative, if n % 2 == 0 { Codec::Zstd } else { Codec::None }, &mut bytes);
                let key = archive.key(&format!("clusters/c1/topics/t/partitions/{p:010}/records/{base:020}.batch"));
                crate::archive::runtime().block_on(archive.store.put(&key, bytes.into())).expect("put");
                if p == 0 && n == 1 {
                    missing.get_or_insert(key.clone());
                }
                victim.get_or_insert(key);
            }
        }
        check_layout(&archive, "t", &history(), &victim.expect("written"), &missing.expect("written"));
        // Detection by keys.
        let detected = Archive::open_layout("memory://conformance-tansu", None, None).expect("opens");
        assert_eq!(detected.layout.name(), "tansu");
    }

    fn one_batch(name: &str, base: &str, records: usize) -> Result<Vec<SegmentRef>> {
        let archive = Archive::open_layout(&format!("memory://{name}"), Some("tansu"), None).expect("opens");
        let relative: Vec<Record> = (0..records as i64)
            .map(|o| Record { offset: o, timestamp: Some(o), key: None, value: Some(bytes::Bytes::from("v")) })
            .collect();
        let mut bytes = Vec::new();
        encode_batch_with(&relative, Codec::None, &mut bytes);
        let key = archive.key(&format!("clusters/c1/topics/t/partitions/0000000000/records/{base}.batch"));
        crate::archive::runtime().block_on(archive.store.put(&key, bytes.into())).expect("put");
        crate::archive::runtime().block_on(TansuLayout::default().segments(&archive, "t", 0))
    }

    #[test]
    fn a_key_at_i64_max_is_a_named_error_not_an_overflow() {
        let err = one_batch("tansu-i64-max", &i64::MAX.to_string(), 1).expect_err("refused");
        assert!(matches!(&err, Error::InvalidKey { object, .. } if object.contains(&i64::MAX.to_string())), "{err}");
        let err = one_batch("tansu-negative", "-0000000000000000005", 1).expect_err("refused");
        assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
        let fine = one_batch("tansu-near-max", &(i64::MAX - 3).to_string(), 3).expect("the last offset fits");
        assert_eq!(fine[0].next_offset, i64::MAX);
    }
}
