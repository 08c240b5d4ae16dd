//! Kappa's own layout, written by `kappa archive write`:
//!
//! ```text
//! {prefix}/kappa/{topic}/{partition:010}/{base_offset:020}-{next_offset:020}.segment
//! ```
//!
//! Each segment is a run of uncompressed RecordBatch v2 batches covering offsets
//! `base_offset..next_offset`. Zero-padded numbers make lexicographic order offset order, and the
//! next offset in the key gives a partition's end without reading any segment. Keys are contiguous
//! (a segment's base is the previous one's next offset, even across offsets that hold no record),
//! so a gap between keys is a missing object: replay refuses it ([`Error::ArchiveHole`]).

use futures::future::BoxFuture;
use futures::FutureExt;
use kappa_engine::Offset;
use object_store::path::Path;

use super::{ArchiveLayout, Hole, Listing, SegmentRef};
use crate::archive::Archive;
use crate::error::{Error, Result};

/// See the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct KappaLayout;

impl KappaLayout {
    /// The key of the segment of `topic`/`partition` covering `base..next`.
    pub fn segment_key(archive: &Archive, topic: &str, partition: i32, base: Offset, next: Offset) -> Path {
        archive.key(&format!("kappa/{topic}/{partition:010}/{base:020}-{next:020}.segment"))
    }

    fn parse_segment(name: &str) -> Option<(Offset, Offset)> {
        let stem = name.strip_suffix(".segment")?;
        let (base, next) = stem.split_once('-')?;
        let (base, next): (Offset, Offset) = (base.parse().ok()?, next.parse().ok()?);
        (0 <= base && base < next).then_some((base, next))
    }
}

impl ArchiveLayout for KappaLayout {
    fn name(&self) -> &'static str {
        "kappa"
    }

    fn partitions<'a>(&'a self, archive: &'a Archive, topic: &'a str) -> BoxFuture<'a, Result<Vec<i32>>> {
        async move {
            let dir = archive.key(&format!("kappa/{topic}"));
            archive.list_numbered_dirs(&dir).await
        }
        .boxed()
    }

    fn list<'a>(&'a self, archive: &'a Archive, topic: &'a str, partition: i32) -> BoxFuture<'a, Result<Listing>> {
        async move {
            let dir = archive.key(&format!("kappa/{topic}/{partition:010}"));
            let objects = archive.list_objects(&dir).await?;
            let mut out = Vec::new();
            for meta in objects {
                let name = meta.location.filename().unwrap_or_default();
                let Some((base_offset, next_offset)) = Self::parse_segment(name) else {
                    return Err(Error::InvalidKey {
                        object: meta.location.to_string(),
                        reason: "not a segment key ({base:020}-{next:020}.segment, 0 <= base < next)".into(),
                    });
                };
                out.push(SegmentRef {
                    key: meta.location,
                    base_offset,
                    next_offset,
                    size: meta.size,
                    relative_offsets: false,
                    aborted: Default::default(),
                    transform: Default::default(),
                    note: None,
                });
            }
            out.sort_by_key(|s| s.base_offset);
            // `archive write` names segments contiguously (each starts where the previous ends,
            // whatever offsets transaction markers or compaction took), so any gap between keys
            // is a missing object.
            let mut holes = Vec::new();
            for pair in out.windows(2) {
                if pair[1].base_offset < pair[0].next_offset {
                    return Err(Error::Inconsistent {
                        object: pair[1].key.to_string(),
                        reason: format!("overlaps the previous segment `{}`", pair[0].key),
                    });
                }
                if pair[1].base_offset > pair[0].next_offset {
                    holes.push(Hole {
                        topic: topic.to_string(),
                        partition,
                        expected_offset: pair[0].next_offset,
                        found_offset: pair[1].base_offset,
                        object: pair[1].key.to_string(),
                    });
                }
            }
            Ok(Listing { segments: out, holes })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::conformance::{check_layout, history};
    use crate::segment::encode_batch;
    use object_store::ObjectStoreExt;

    #[test]
    fn kappa_layout_conforms() {
        let archive = Archive::open("memory://conformance-kappa").expect("opens");
        let (mut victim, mut missing) = (None, None);
        for (p, records) in history() {
            for (n, chunk) in records.chunks(11).enumerate() {
                let mut bytes = Vec::new();
                for batch in chunk.chunks(4) {
                    encode_batch(batch, &mut bytes);
                }
                let key =
                    KappaLayout::segment_key(&archive, "t", p, chunk[0].offset, chunk[chunk.len() - 1].offset + 1);
                crate::archive::runtime().block_on(archive.store.put(&key, bytes.into())).expect("put");
                if p == 0 && n == 1 {
                    missing.get_or_insert(key.clone());
                }
                victim.get_or_insert(key);
            }
        }
        check_layout(&archive, "t", &history(), &victim.expect("written"), &missing.expect("written"));
    }

    #[test]
    fn keys_sort_in_offset_order_and_parse_back() {
        let archive = Archive::open("memory://layout-keys").expect("opens");
        let a = KappaLayout::segment_key(&archive, "likes", 3, 9, 10);
        let b = KappaLayout::segment_key(&archive, "likes", 3, 10, 200);
        assert!(a.as_ref() < b.as_ref());
        assert_eq!(b.as_ref(), "kappa/likes/0000000003/00000000000000000010-00000000000000000200.segment");
        assert_eq!(KappaLayout::parse_segment(b.filename().expect("has a name")), Some((10, 200)));
        assert_eq!(KappaLayout::parse_segment("00000000000000000010-00000000000000000010.segment"), None);
        assert_eq!(KappaLayout::parse_segment("-0000000000000000010-00000000000000000010.segment"), None);
        let max = format!("{:020}-99999999999999999999.segment", i64::MAX);
        assert_eq!(KappaLayout::parse_segment(&max), None, "an offset past i64::MAX is no offset");
    }
}
