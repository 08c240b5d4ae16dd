//! `kappa archive inspect`: what an archive holds, per partition, read and checked in full.

use std::collections::BTreeMap;

use kappa_engine::Offset;

use object_store::ObjectStoreExt;

use crate::archive::{runtime, Archive};
use crate::error::{Error, Result};
use crate::segment::decode_segment;

/// One partition of an archived topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionSummary {
    /// Segments.
    pub segments: usize,
    /// Bytes in those segments.
    pub bytes: u64,
    /// First archived offset and the offset after the last.
    pub offsets: Option<(Offset, Offset)>,
    /// Data records.
    pub records: u64,
    /// Least and largest record timestamp (ms).
    pub timestamps: Option<(i64, i64)>,
}

/// Reads every segment of `topic` (checking every batch's CRC) and summarises each partition.
pub fn inspect(archive: &Archive, topic: &str) -> Result<BTreeMap<i32, PartitionSummary>> {
    runtime().block_on(async {
        let mut out = BTreeMap::new();
        for p in archive.layout.partitions(archive, topic).await? {
            let mut summary = PartitionSummary::default();
            for segment in archive.layout.segments(archive, topic, p).await? {
                let bytes = archive
                    .store
                    .get(&segment.key)
                    .await
                    .map_err(|source| Error::ObjectStore { object: segment.key.to_string(), source })?
                    .bytes()
                    .await
                    .map_err(|source| Error::ObjectStore { object: segment.key.to_string(), source })?;
                let mut records = Vec::new();
                let seg = decode_segment(segment.key.as_ref(), &bytes, Offset::MIN, &mut records)?;
                summary.segments += 1;
                summary.bytes += bytes.len() as u64;
                summary.records += seg.records as u64;
                let first = summary.offsets.map_or(segment.base_offset, |(f, _)| f);
                summary.offsets = Some((first, segment.next_offset));
                if let Some((lo, hi)) = seg.timestamps {
                    summary.timestamps = Some(summary.timestamps.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
                }
            }
            out.insert(p, summary);
        }
        if out.is_empty() {
            return Err(Error::EmptyArchive { url: archive.url.clone(), topic: topic.to_string() });
        }
        Ok(out)
    })
}
