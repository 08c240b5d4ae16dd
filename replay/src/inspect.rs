//! `kappa archive inspect` and `kappa archive verify`: what an archive holds, read and checked in
//! full, per partition.

use std::collections::BTreeMap;

use kappa_engine::Offset;

use crate::archive::{runtime, Archive};
use crate::error::{Error, Result};
use crate::layout::SegmentRef;
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
    /// Every damaged segment, over all partitions.
    pub fn damaged(&self) -> Vec<&(String, String)> {
        self.partitions.values().flat_map(|p| p.damaged.iter()).collect()
    }
}

async fn fetch_and_check(archive: &Archive, segment: &SegmentRef) -> Result<(u64, crate::segment::SegmentSummary)> {
    let bytes = archive.fetch(&segment.key).await?;
    let (_, summary) = decode_checked_summary(segment, &bytes, Offset::MIN)?;
    Ok((bytes.len() as u64, summary))
}

/// Reads every segment of `topic` (checking every batch's CRC and every segment's offsets against
/// its key) and summarises each partition. Damaged segments are listed, not fatal; listing
/// failures and transport errors are.
pub fn summarize(archive: &Archive, topic: &str) -> Result<TopicSummary> {
    runtime().block_on(async {
        let mut out = TopicSummary { carries_aborts: archive.layout.carries_aborts(), ..TopicSummary::default() };
        for p in archive.layout.partitions(archive, topic).await? {
            let mut summary = PartitionSummary::default();
            for segment in archive.layout.segments(archive, topic, p).await? {
                summary.segments += 1;
                summary.bytes += segment.size;
                summary.notes.extend(segment.note.clone());
                let first = summary.offsets.map_or(segment.base_offset, |(f, _)| f);
                summary.offsets = Some((first, segment.next_offset));
                match fetch_and_check(archive, &segment).await {
                    Ok((_, seg)) => {
                        summary.records += seg.records as u64;
                        summary.control_batches += seg.control_batches as u64;
                        summary.transactional_batches += seg.transactional_batches as u64;
                        summary.aborted_batches += seg.aborted_batches as u64;
                        if let Some((lo, hi)) = seg.timestamps {
                            summary.timestamps =
                                Some(summary.timestamps.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
                        }
                        for codec in seg.codecs {
                            if !summary.codecs.contains(&codec) {
                                summary.codecs.push(codec);
                            }
                        }
                    }
                    Err(Error::ObjectStore { object, source }) => return Err(Error::ObjectStore { object, source }),
                    Err(damage) => summary.damaged.push((segment.key.to_string(), damage.to_string())),
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
