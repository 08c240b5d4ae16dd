//! `kappa archive inspect` and `kappa archive verify`: what an archive holds, read and checked in
//! full, per partition.

use std::collections::BTreeMap;

use kappa_engine::Offset;

use crate::archive::{runtime, Archive};
use crate::error::{Error, Result};
use crate::layout::{Hole, SegmentRef};
use crate::segment::Codec;
use crate::source::decode_checked_summary;

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
    /// Control batches (transaction markers), skipped by replay.
    pub control_batches: u64,
    /// Least and largest record timestamp (ms).
    pub timestamps: Option<(i64, i64)>,
    /// Codecs of the data batches.
    pub codecs: Vec<Codec>,
    /// Transactional data batches.
    pub transactional_batches: u64,
    /// Batches of aborted transactions, skipped.
    pub aborted_batches: u64,
    /// What the layout noted about segments (choices among uploads, say).
    pub notes: Vec<String>,
    /// Segments that failed their checks: key and reason.
    pub damaged: Vec<(String, String)>,
    /// Offsets no object holds although the layout shows some object must: missing objects.
    pub holes: Vec<Hole>,
}

/// What an archive holds for one topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicSummary {
    /// Per partition.
    pub partitions: BTreeMap<i32, PartitionSummary>,
    /// Whether the layout records aborted transactions (if not, their records are replayed).
    pub carries_aborts: bool,
}

impl TopicSummary {
    /// A sentence on transactions, when the archive holds transactional batches.
    pub fn transactions_note(&self) -> Option<String> {
        let txn: u64 = self.partitions.values().map(|p| p.transactional_batches).sum();
        let aborted: u64 = self.partitions.values().map(|p| p.aborted_batches).sum();
        match (txn, self.carries_aborts) {
            (0, _) => None,
            (_, true) => {
                Some(format!("transactions: {txn} transactional batches, {aborted} of aborted transactions skipped"))
            }
            (_, false) => Some(format!(
                "transactions: {txn} transactional batches, but this layout does not record which transactions \
                 were aborted: replay reads them all"
            )),
        }
    }
}

impl TopicSummary {
    /// Everything `verify` refuses, as (object, why): every damaged segment, and every hole (named
    /// by the object just after it).
    pub fn damaged(&self) -> Vec<(String, String)> {
        self.partitions
            .values()
            .flat_map(|p| {
                let holes = p.holes.iter().map(|h| (h.object.clone(), Error::from(h.clone()).to_string()));
                p.damaged.iter().cloned().chain(holes)
            })
            .collect()
    }
}

/// Reads every segment of `topic` (checking every batch's CRC and every segment's offsets against
/// its key) and summarises each partition. Damaged segments and holes are listed, not fatal;
/// listing failures and transport errors are. Where the layout cannot tell a missing object from
/// a legitimate gap in offsets, each gap between segments is noted with the reason.
pub fn summarize(archive: &Archive, topic: &str) -> Result<TopicSummary> {
    runtime().block_on(async {
        let layout = &archive.layout;
        let mut out = TopicSummary { carries_aborts: layout.carries_aborts(), ..TopicSummary::default() };
        for p in layout.partitions(archive, topic).await? {
            let mut summary = PartitionSummary::default();
            let listing = layout.list(archive, topic, p).await?;
            summary.holes.extend(listing.holes);
            let count = listing.segments.len();
            for (i, segment) in listing.segments.iter().enumerate() {
                summary.segments += 1;
                summary.bytes = summary.bytes.saturating_add(segment.size);
                summary.notes.extend(segment.note.clone());
                let first = summary.offsets.map_or(segment.base_offset, |(f, _)| f);
                summary.offsets = Some((first, segment.next_offset));
                let bytes = crate::layout::fetch_segment(archive.store.as_ref(), segment).await?;
                let checked = match decode_checked_summary(segment, &bytes, Offset::MIN) {
                    Err(hole @ Error::ArchiveHole { .. }) => {
                        // Only the bytes showed the hole: list it, and still read the segment.
                        summary.holes.extend(Hole::from_error(&hole));
                        let unchecked =
                            SegmentRef { transform: segment.transform.without_end_check(), ..segment.clone() };
                        decode_checked_summary(&unchecked, &bytes, Offset::MIN)
                    }
                    other => other,
                };
                let seg = match checked {
                    Ok((_, seg)) => seg,
                    Err(Error::ObjectStore { object, source }) => return Err(Error::ObjectStore { object, source }),
                    Err(damage) => {
                        summary.damaged.push((segment.key.to_string(), damage.to_string()));
                        continue;
                    }
                };
                if let (Some(reason), Some((_, last))) = (layout.cannot_tell_holes(), seg.offsets) {
                    // `last` is at most MAX_OFFSET (the decoder refuses larger), so `+ 1` cannot overflow.
                    if i + 1 < count && last + 1 < segment.next_offset {
                        summary.notes.push(format!(
                            "offsets {}..{} are in no batch (after `{}`): a missing segment, or offsets with no \
                             record left; {reason}",
                            last + 1,
                            segment.next_offset,
                            segment.key
                        ));
                    }
                }
                summary.records += seg.records as u64;
                summary.control_batches += seg.control_batches as u64;
                summary.transactional_batches += seg.transactional_batches as u64;
                summary.aborted_batches += seg.aborted_batches as u64;
                if let Some((lo, hi)) = seg.timestamps {
                    summary.timestamps = Some(summary.timestamps.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
                }
                for codec in seg.codecs {
                    if !summary.codecs.contains(&codec) {
                        summary.codecs.push(codec);
                    }
                }
            }
            out.partitions.insert(p, summary);
        }
        if out.partitions.is_empty() {
            return Err(Error::EmptyArchive { url: archive.url.clone(), topic: topic.to_string() });
        }
        Ok(out)
    })
}
