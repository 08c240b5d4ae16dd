//! Kafka tiered storage (KIP-405) as written by Aiven's remote storage manager:
//!
//! ```text
//! {prefix}{topic}-{topicId}/{partition}/{base_offset:020}-{segmentUuid}.log           the segment, chunked
//! {prefix}{topic}-{topicId}/{partition}/{base_offset:020}-{segmentUuid}.indexes       its indexes
//! {prefix}{topic}-{topicId}/{partition}/{base_offset:020}-{segmentUuid}.rsm-manifest  JSON: how to read them
//! ```
//!
//! The `.log` object is the original segment split into chunks of `originalChunkSize` bytes, each
//! transformed on its own (zstd-compressed when `compression` is true; encryption is refused). The
//! manifest's chunk index gives the transformed sizes: `fixed` (all chunks `transformedChunkSize`,
//! the last `finalTransformedChunkSize`) or `variable` (a base64, zstd-compressed list: count and
//! base as big-endian int32, a byte width, `count − 1` values minus base in that width, and the
//! last value as an int32). Untransformed, the segment is ordinary RecordBatches with absolute
//! offsets. The `.indexes` object is the segment's Kafka indexes one after another (offset index,
//! time index, producer snapshot, leader epochs, transaction index), each at the `position` and
//! `size` the manifest's `segmentIndexes` give.
//!
//! Listing reads manifests only, never segments: a manifest's `remoteLogSegmentMetadata` gives
//! the segment's start and end offsets. Kafka uploads a partition's segments in order, each ending
//! where the next begins (its end offset is the next segment's base offset − 1, and tiered topics
//! are never compacted), so a gap between one segment's end and the next one's base is a missing
//! segment: replay refuses it ([`Error::ArchiveHole`]) and `verify` lists it. Manifests written
//! by plugin versions without that metadata leave each segment's end at the next one's base; a
//! missing segment then shows when the segment before it is read (its batches end early), and the
//! last segment's end is read from its tail (see [`Kip405Layout`]'s `tail_end`).
//!
//! Every size in a manifest is checked against the object it describes before anything is
//! allocated from it: a chunk index cannot have more chunks than its object has bytes.
//!
//! When several uploads share a base offset (a retried upload), the one covering the most offsets
//! is read (by the manifest's end offset, or where manifests do not say, the larger original
//! segment), ties going to the smallest segment id; `inspect` lists the choice.
//!
//! Which uploads are valid is Kafka's to say ([`super::remote_log_metadata`]): given the broker's
//! remote log metadata, only uploads it calls finished are read; with or without it, uploads off
//! the partition's leader-epoch lineage are dropped ([`Kip405Layout`]'s `validate`), and the
//! first segment's note says which rule applied and what it dropped.
//!
//! Caveat: this reader was written from the format's published code and tested on fixtures built
//! here, not yet on an upload by a real broker with the plugin.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use kappa_engine::Offset;
use object_store::path::Path;
use object_store::ObjectMeta;
use serde::Deserialize;

use super::remote_log_metadata::{Lineage, RemoteLogMetadata, SegmentState};
use super::{ArchiveLayout, Hole, Listing, MustReach, SegmentRef, Transform};
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::segment::compression::{decompress, Codec, MAX_DECOMPRESSED};
use crate::segment::extent::walk_batches;

/// Largest manifest read. A variable chunk index for a 2 GiB segment in 64 KiB chunks needs
/// about 200 KiB; anything much larger is not a manifest.
const MAX_MANIFEST: u64 = 16 << 20;
/// Largest decompressed variable chunk size list.
const MAX_SIZE_LIST: usize = 1 << 24;
/// Kafka's largest segment (`segment.bytes` is an int).
const MAX_SEGMENT: u32 = i32::MAX as u32;
/// Manifests fetched at once while listing.
const CONCURRENT_MANIFESTS: usize = 8;

/// See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct Kip405Layout {
    /// The broker's remote log metadata (`--remote-log-metadata`): when given, only uploads whose
    /// latest state is COPY_SEGMENT_FINISHED are read. Without it, every upload with a manifest is
    /// a candidate. Either way, uploads off the leader-epoch lineage are dropped (see
    /// the module documentation).
    pub metadata: Option<Arc<RemoteLogMetadata>>,
}

/// The parts of `.rsm-manifest` replay needs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// How the `.log` object is chunked.
    pub chunk_index: ChunkIndexJson,
    /// Where each index lies in the `.indexes` object.
    #[serde(default)]
    pub segment_indexes: Option<SegmentIndexes>,
    /// Whether chunks are zstd-compressed.
    #[serde(default)]
    pub compression: bool,
    /// Encryption metadata, if the segment is encrypted.
    #[serde(default)]
    pub encryption: Option<serde_json::Value>,
    /// The broker's metadata of the segment (written by plugin versions since 2023).
    #[serde(default)]
    pub remote_log_segment_metadata: Option<SegmentMetadata>,
    /// Byte offset of the `endOffset` field in the manifest, for errors.
    #[serde(skip)]
    end_offset_at: u64,
}

/// The offsets (and leader epochs) of `remoteLogSegmentMetadata`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentMetadata {
    /// The segment's first offset.
    pub start_offset: i64,
    /// The segment's last offset (inclusive): the next segment's base offset − 1.
    pub end_offset: i64,
    /// Leader epoch → its first offset in the segment.
    #[serde(default)]
    pub segment_leader_epochs: BTreeMap<i32, i64>,
}

/// `segmentIndexes`: where each of the segment's indexes lies in the `.indexes` object. Only the
/// offset index is read.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub struct SegmentIndexes {
    /// The offset index (`.index`).
    #[serde(default)]
    pub offset: Option<IndexRange>,
    /// The leader-epoch checkpoint (the partition's lineage up to the segment's end).
    #[serde(default, rename = "leaderEpoch")]
    pub leader_epoch: Option<IndexRange>,
}

/// One index's place in the `.indexes` object.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct IndexRange {
    /// Its first byte.
    pub position: i64,
    /// Its length.
    pub size: i64,
}

impl IndexRange {
    /// The bytes of an `.indexes` object of `object_size` bytes this range covers, or a
    /// [`Error::CorruptMetadata`] naming `manifest` if they are not all in it.
    pub fn bytes_in(&self, manifest: &str, object_size: u64) -> Result<std::ops::Range<u64>> {
        let (Ok(position), Ok(size)) = (u64::try_from(self.position), u64::try_from(self.size)) else {
            return Err(corrupt_metadata(
                manifest,
                0,
                format!("index at byte {} of {} bytes", self.position, self.size),
            ));
        };
        match position.checked_add(size) {
            Some(end) if end <= object_size => Ok(position..end),
            _ => Err(corrupt_metadata(
                manifest,
                0,
                format!("index at byte {position} of {size} bytes lies past the {object_size}-byte indexes object"),
            )),
        }
    }
}

fn corrupt_metadata(object: &str, byte_offset: u64, reason: String) -> Error {
    Error::CorruptMetadata { object: object.to_string(), byte_offset, reason }
}

/// The chunk index as the manifest spells it.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ChunkIndexJson {
    /// Every chunk the same transformed size but the last.
    #[serde(rename_all = "camelCase")]
    Fixed {
        /// Original chunk size.
        original_chunk_size: u32,
        /// Original file size.
        original_file_size: u32,
        /// Transformed size of every chunk but the last.
        transformed_chunk_size: u32,
        /// Transformed size of the last chunk.
        final_transformed_chunk_size: u32,
    },
    /// Transformed sizes listed one by one.
    #[serde(rename_all = "camelCase")]
    Variable {
        /// Original chunk size.
        original_chunk_size: u32,
        /// Original file size.
        original_file_size: u32,
        /// Base64 of the zstd-compressed size list.
        transformed_chunks: String,
    },
}

/// Chunks of a transformed segment. Sizes are computed per chunk, never listed: a chunk index
/// costs memory in proportion to its encoding, whatever count it claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunks {
    original_chunk_size: u32,
    original_file_size: u32,
    count: usize,
    transformed: TransformedSizes,
    compressed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TransformedSizes {
    Fixed { chunk: u32, last: u32 },
    Variable(SizeList),
}

/// A decoded `variable` size list, kept as packed as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeList {
    count: usize,
    base: u32,
    width: usize,
    deltas: Vec<u8>,
    last: u32,
}

impl SizeList {
    /// Number of sizes.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none (never, once decoded).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<u32> {
        if i >= self.count {
            return None;
        }
        if i + 1 == self.count {
            return Some(self.last);
        }
        let delta = self.deltas.get(i * self.width..(i + 1) * self.width)?;
        // Every `base + delta` was checked not to overflow when decoding.
        Some(self.base + delta.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
    }

    /// The sizes in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.count).filter_map(|i| self.get(i))
    }
}

/// Decodes the `variable` index's size list of the manifest `object`, refusing one of more than
/// `max_count` sizes before decoding any.
pub fn decode_variable_sizes(object: &str, encoded: &str, max_count: usize) -> Result<SizeList> {
    let corrupt = |reason: String| corrupt_metadata(object, 0, format!("variable chunk index: {reason}"));
    let packed = base64_decode(encoded).map_err(|c| corrupt(format!("invalid base64 character {c:?}")))?;
    let raw = decompress(object, 0, Codec::Zstd, &packed, MAX_SIZE_LIST).map_err(|e| match e {
        Error::CorruptBatch { reason, .. } => corrupt(reason),
        other => other,
    })?;
    let header: [u8; 9] = raw.get(..9).and_then(|h| h.try_into().ok()).ok_or_else(|| corrupt("truncated".into()))?;
    let count = u32::from_be_bytes(header[0..4].try_into().expect("4 of 9 bytes")) as usize;
    let base = u32::from_be_bytes(header[4..8].try_into().expect("4 of 9 bytes"));
    let width = usize::from(header[8]);
    if count == 0 || count > max_count || width > 4 {
        return Err(corrupt(format!("{count} sizes of width {width} (at most {max_count} sizes of width 4 fit)")));
    }
    let deltas_len = (count - 1) * width; // count ≤ max_count, width ≤ 4: no overflow
    if raw.len() != 9 + deltas_len + 4 {
        return Err(corrupt(format!("{} bytes do not hold {count} sizes of width {width}", raw.len())));
    }
    let deltas = raw[9..9 + deltas_len].to_vec();
    let last = u32::from_be_bytes(raw[9 + deltas_len..].try_into().expect("the last 4 bytes"));
    for delta in deltas.chunks_exact(width.max(1)).take(count - 1) {
        let delta = delta.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        if base.checked_add(delta).is_none() {
            return Err(corrupt(format!("size {base} + {delta} overflows")));
        }
    }
    Ok(SizeList { count, base, width, deltas, last })
}

/// Encodes a `variable` index's size list (for fixtures), width 4.
#[cfg(test)]
pub(crate) fn encode_variable_sizes(sizes: &[u32]) -> String {
    let base = sizes[..sizes.len() - 1].iter().copied().min().unwrap_or(0);
    let mut raw = Vec::new();
    raw.extend((sizes.len() as u32).to_be_bytes());
    raw.extend(base.to_be_bytes());
    raw.push(4);
    for s in &sizes[..sizes.len() - 1] {
        raw.extend((s - base).to_be_bytes());
    }
    raw.extend(sizes[sizes.len() - 1].to_be_bytes());
    base64_encode(&crate::segment::compression::compress(Codec::Zstd, &raw))
}

/// Where in `text` line `line`, column `column` (1-based, as serde_json counts) lies.
fn json_byte_offset(text: &[u8], line: usize, column: usize) -> u64 {
    let line_start = if line <= 1 {
        0
    } else {
        text.iter().enumerate().filter(|(_, &b)| b == b'\n').nth(line - 2).map_or(text.len(), |(i, _)| i + 1)
    };
    line_start.saturating_add(column.saturating_sub(1)).min(text.len()) as u64
}

impl Manifest {
    /// Parses the manifest `object`; damage is a [`Error::CorruptMetadata`] at the byte where the
    /// JSON goes wrong.
    pub fn parse(object: &str, bytes: &[u8]) -> Result<Manifest> {
        let mut manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            corrupt_metadata(object, json_byte_offset(bytes, e.line(), e.column()), format!("not an RSM manifest: {e}"))
        })?;
        manifest.end_offset_at =
            bytes.windows(b"\"endOffset\"".len()).position(|w| w == b"\"endOffset\"").unwrap_or(0) as u64;
        Ok(manifest)
    }

    /// The chunk layout of the `.log` object of `log_size` bytes this manifest (`object`)
    /// describes, or why it cannot be read. Every chunk takes at least one byte of the object, so
    /// a chunk index may not claim more chunks than the object has bytes: nothing built from the
    /// manifest's numbers can outgrow what is really stored.
    pub fn chunks(&self, object: &str, log_size: u64) -> Result<Chunks> {
        if self.encryption.as_ref().is_some_and(|e| !e.is_null()) {
            return Err(Error::UnsupportedFormat {
                object: object.to_string(),
                byte_offset: 0,
                what: "the segment is encrypted; encrypted KIP-405 segments are not supported".into(),
            });
        }
        let (original_chunk_size, original_file_size) = match self.chunk_index {
            ChunkIndexJson::Fixed { original_chunk_size, original_file_size, .. }
            | ChunkIndexJson::Variable { original_chunk_size, original_file_size, .. } => {
                (original_chunk_size, original_file_size)
            }
        };
        if original_chunk_size == 0 {
            return Err(corrupt_metadata(object, 0, "chunk index with originalChunkSize 0".into()));
        }
        if original_file_size > MAX_SEGMENT {
            return Err(corrupt_metadata(
                object,
                0,
                format!("originalFileSize {original_file_size} is past Kafka's largest segment ({MAX_SEGMENT} bytes)"),
            ));
        }
        let count = u64::from(original_file_size).div_ceil(u64::from(original_chunk_size)).max(1);
        let count = usize::try_from(count).ok().filter(|&c| c as u64 <= log_size.max(1)).ok_or_else(|| {
            corrupt_metadata(
                object,
                0,
                format!(
                    "a chunk index of {count} chunks ({original_file_size} bytes in chunks of {original_chunk_size}) \
                     cannot describe an object of {log_size} bytes"
                ),
            )
        })?;
        let transformed = match &self.chunk_index {
            ChunkIndexJson::Fixed { transformed_chunk_size, final_transformed_chunk_size, .. } => {
                TransformedSizes::Fixed { chunk: *transformed_chunk_size, last: *final_transformed_chunk_size }
            }
            ChunkIndexJson::Variable { transformed_chunks, .. } => {
                let list = decode_variable_sizes(object, transformed_chunks, count)?;
                if list.len() != count {
                    return Err(corrupt_metadata(
                        object,
                        0,
                        format!("{} transformed chunk sizes for {count} chunks", list.len()),
                    ));
                }
                TransformedSizes::Variable(list)
            }
        };
        Ok(Chunks { original_chunk_size, original_file_size, count, transformed, compressed: self.compression })
    }

    /// The offset after the segment's last, where the manifest says (checked against the segment's
    /// base offset `base`, from its key).
    pub fn next_offset(&self, object: &str, base: Offset) -> Result<Option<Offset>> {
        let Some(SegmentMetadata { start_offset, end_offset, .. }) = self.remote_log_segment_metadata.clone() else {
            return Ok(None);
        };
        if start_offset != base {
            return Err(Error::Inconsistent {
                object: object.to_string(),
                reason: format!("says its segment starts at offset {start_offset}, its key says {base}"),
            });
        }
        if end_offset < start_offset {
            return Err(corrupt_metadata(
                object,
                self.end_offset_at,
                format!("end offset {end_offset} is before start offset {start_offset}"),
            ));
        }
        let next = end_offset.checked_add(1).ok_or_else(|| {
            corrupt_metadata(object, self.end_offset_at, format!("end offset {end_offset} leaves no next offset"))
        })?;
        Ok(Some(next))
    }
}

impl Chunks {
    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none (never: an empty segment is one empty chunk).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The original segment's size.
    pub fn original_file_size(&self) -> u32 {
        self.original_file_size
    }

    /// `(original size, transformed size)` of chunk `i` (`i < len()`).
    pub fn size(&self, i: usize) -> (u32, u32) {
        let original = if i + 1 < self.count {
            self.original_chunk_size
        } else {
            // count = ⌈file / chunk⌉, so chunk × (count − 1) < file (or both are 0).
            (u64::from(self.original_file_size) - u64::from(self.original_chunk_size) * (self.count as u64 - 1)) as u32
        };
        let transformed = match &self.transformed {
            TransformedSizes::Fixed { chunk, last } => {
                if i + 1 < self.count {
                    *chunk
                } else {
                    *last
                }
            }
            TransformedSizes::Variable(list) => list.get(i).unwrap_or(0),
        };
        (original, transformed)
    }

    /// Every chunk's `(original size, transformed size)`, in order.
    pub fn sizes(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        (0..self.count).map(|i| self.size(i))
    }

    /// Where chunk `i` starts in the transformed object (`i <= len()`; `len()` gives its end).
    pub fn transformed_offset(&self, i: usize) -> u64 {
        match &self.transformed {
            TransformedSizes::Fixed { chunk, last } if i == self.count => {
                u64::from(*chunk).saturating_mul(self.count as u64 - 1).saturating_add(u64::from(*last))
            }
            TransformedSizes::Fixed { chunk, .. } => u64::from(*chunk).saturating_mul(i as u64),
            TransformedSizes::Variable(list) => list.iter().take(i).map(u64::from).sum(),
        }
    }

    /// The original segment from the transformed object `bytes`.
    pub fn untransform(&self, object: &str, bytes: &Bytes) -> Result<Bytes> {
        self.untransform_from(object, bytes, 0)
    }

    /// The original bytes of chunks `first..` from `bytes`, the transformed object from chunk
    /// `first` on.
    pub fn untransform_from(&self, object: &str, bytes: &Bytes, first: usize) -> Result<Bytes> {
        let origin = self.transformed_offset(first.min(self.count));
        let total = self.transformed_offset(self.count);
        let have = origin + bytes.len() as u64;
        if first >= self.count || have != total {
            return Err(Error::CorruptBatch {
                object: object.to_string(),
                byte_offset: have.min(total),
                reason: format!("the manifest's chunks add up to {total} bytes, the object has {have}"),
            });
        }
        if !self.compressed {
            return Ok(bytes.clone());
        }
        // Reserve only what the object holds; each chunk then grows the output by the size the
        // manifest gives it, checked as it inflates.
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0usize;
        for i in first..self.count {
            let (original, transformed) = self.size(i);
            // The sizes add up to `bytes.len()` (checked above), so every chunk lies inside.
            let chunk = &bytes[at..at + transformed as usize];
            let limit = (original as usize).min(MAX_DECOMPRESSED);
            let plain = decompress(object, origin + at as u64, Codec::Zstd, chunk, limit).map_err(|e| match e {
                Error::CorruptBatch { object, byte_offset, reason } => {
                    Error::CorruptBatch { object, byte_offset, reason: format!("chunk {i}: {reason}") }
                }
                other => other,
            })?;
            if plain.len() != original as usize {
                return Err(Error::CorruptBatch {
                    object: object.to_string(),
                    byte_offset: origin + at as u64,
                    reason: format!("chunk {i} inflates to {} bytes, the manifest says {original}", plain.len()),
                });
            }
            out.extend(plain);
            at += transformed as usize;
        }
        Ok(Bytes::from(out))
    }
}

/// The last entry of a Kafka offset index (`.index` format: big-endian relative offset and byte
/// position, 4 bytes each, both increasing), or `None` if it has none. Entries from the first that
/// does not increase on are ignored: they are the zeros of a preallocated index.
pub fn offset_index_last(object: &str, bytes: &[u8]) -> Result<Option<(u32, u32)>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(corrupt_metadata(
            object,
            (bytes.len() - bytes.len() % 8) as u64,
            format!("offset index of {} bytes is not a whole number of 8-byte entries", bytes.len()),
        ));
    }
    let mut last: Option<(u32, u32)> = None;
    for (i, entry) in bytes.chunks_exact(8).enumerate() {
        let relative = i32::from_be_bytes(entry[..4].try_into().expect("4 of 8 bytes"));
        let position = i32::from_be_bytes(entry[4..].try_into().expect("4 of 8 bytes"));
        let (Ok(relative), Ok(position)) = (u32::try_from(relative), u32::try_from(position)) else {
            return Err(corrupt_metadata(
                object,
                i as u64 * 8,
                format!("negative offset index entry ({relative}, {position})"),
            ));
        };
        match last {
            Some((r, p)) if relative <= r || position <= p => break,
            _ => last = Some((relative, position)),
        }
    }
    Ok(last)
}

fn base64_decode(text: &str) -> std::result::Result<Vec<u8>, char> {
    // A dozen lines instead of a dependency: only the standard alphabet, with padding, is used here.
    let value = |c: u8| -> std::result::Result<u32, char> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(c as char),
        } as u32)
    };
    let clean: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for group in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        out.extend(&n.to_be_bytes()[1..group.len().max(1)]);
    }
    Ok(out)
}

#[cfg(test)]
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= group.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Kip405Layout {
    /// The directory of `topic` under the archive: `{topic}-{topicId}`. A topic deleted and
    /// recreated under its name leaves one directory per topic id; then the remote log metadata
    /// decides (the id it saw last for the name is the current topic), and without it the choice
    /// is refused.
    async fn topic_dir(&self, archive: &Archive, topic: &str) -> Result<Option<Path>> {
        let mut dirs: Vec<String> = archive
            .list_dirs(&archive.prefix)
            .await?
            .into_iter()
            .filter(|name| strip_topic_id(name) == Some(topic))
            .collect();
        dirs.sort();
        if dirs.len() > 1 {
            let current = self.metadata.as_ref().and_then(|m| m.topic_ids.get(topic)).and_then(|ids| ids.last());
            match current.and_then(|id| dirs.iter().find(|d| topic_id_of(d).as_ref() == Some(id))) {
                Some(dir) => dirs = vec![dir.clone()],
                None => {
                    return Err(Error::Inconsistent {
                        object: archive.prefix.clone().join(dirs[1].as_str()).to_string(),
                        reason: format!(
                            "topic `{topic}` has uploads under several topic ids ({}): a topic deleted and recreated \
                             under its name; give --remote-log-metadata BROKERS so Kafka's metadata names the \
                             current one, or move the old directories away",
                            dirs.join(", ")
                        ),
                    })
                }
            }
        }
        Ok(dirs.into_iter().next().map(|name| archive.prefix.clone().join(name)))
    }
}

/// `{topic}-{topicId}` → `topic`, for a topic id in any of the usual spellings (22-character
/// base64 or a dashed UUID).
pub(crate) fn strip_topic_id(dir: &str) -> Option<&str> {
    let n = dir.len();
    // A dashed UUID (checked first: its last 22 characters would pass for base64).
    let dashed = |id: &str| {
        id.len() == 36
            && id
                .char_indices()
                .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() })
    };
    if n > 37 && dir.as_bytes()[n - 37] == b'-' && dashed(&dir[n - 36..]) {
        return Some(&dir[..n - 37]);
    }
    // Kafka's own spelling: 22 characters of URL-safe base64 (which may contain '-').
    if n > 23 && dir.as_bytes()[n - 23] == b'-' && !dir[n - 22..].bytes().all(|b| b.is_ascii_digit()) {
        return Some(&dir[..n - 23]);
    }
    None
}

/// The topic id of a `{topic}-{topicId}` directory, as Kafka prints ids (URL-safe base64 of the
/// 16 bytes, 22 characters), whichever spelling the directory uses.
pub(crate) fn topic_id_of(dir: &str) -> Option<String> {
    let topic = strip_topic_id(dir)?;
    let id = &dir[topic.len() + 1..];
    if id.len() == 22 {
        return Some(id.to_string());
    }
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(super::remote_log_metadata::uuid_string(&bytes))
}

/// One upload of a segment: its objects and what its manifest says.
struct Upload {
    base: Offset,
    id: String,
    log: ObjectMeta,
    manifest_key: Path,
    manifest: Manifest,
    indexes: Option<ObjectMeta>,
    chunks: Arc<Chunks>,
    /// The offset after the segment's last, where the manifest (or the remote log metadata) says.
    next: Option<Offset>,
    /// Leader epoch → its first offset in the segment, where the manifest (or the metadata) says.
    epochs: BTreeMap<i32, Offset>,
}

/// `key` with its `.log` suffix replaced by `suffix`.
fn sibling(log: &Path, suffix: &str) -> Result<Path> {
    let stem = log.as_ref().strip_suffix(".log").unwrap_or(log.as_ref());
    Path::parse(format!("{stem}{suffix}"))
        .map_err(|e| Error::InvalidKey { object: log.to_string(), reason: format!("no {suffix} key beside it: {e}") })
}

/// Reads the manifest of the upload whose `.log` is `log`; `None` if it has none (an upload that
/// did not finish).
async fn read_upload(
    archive: &Archive,
    base: Offset,
    id: String,
    log: ObjectMeta,
    objects: &HashMap<String, ObjectMeta>,
) -> Result<Option<Upload>> {
    let manifest_key = sibling(&log.location, ".rsm-manifest")?;
    let Some(manifest_meta) = objects.get(manifest_key.as_ref()) else { return Ok(None) };
    if manifest_meta.size > MAX_MANIFEST {
        return Err(corrupt_metadata(
            manifest_key.as_ref(),
            0,
            format!("{} bytes, more than the {MAX_MANIFEST} any manifest needs", manifest_meta.size),
        ));
    }
    let bytes = archive.fetch(&manifest_key).await?;
    let manifest = Manifest::parse(manifest_key.as_ref(), &bytes)?;
    let chunks = Arc::new(manifest.chunks(manifest_key.as_ref(), log.size)?);
    let next = manifest.next_offset(manifest_key.as_ref(), base)?;
    let indexes = objects.get(sibling(&log.location, ".indexes")?.as_ref()).cloned();
    let epochs =
        manifest.remote_log_segment_metadata.as_ref().map(|m| m.segment_leader_epochs.clone()).unwrap_or_default();
    Ok(Some(Upload { base, id, log, manifest_key, manifest, indexes, chunks, next, epochs }))
}

/// The offset after the last segment's last batch, when its manifest does not say (plugin versions
/// without `remoteLogSegmentMetadata`). Only the segment's bytes know it, so only its tail is
/// read: the offset index's last entry (from `.indexes`, one ranged read) points at a batch near
/// the end; the chunks from there on are fetched (one ranged read), untransformed, and their batch
/// headers walked. Without an offset index the walk starts at the segment's first byte, so the
/// whole of this one segment is read.
async fn tail_end(archive: &Archive, upload: &Upload) -> Result<Offset> {
    let log = upload.log.location.as_ref();
    let chunks = &upload.chunks;
    let mut position = 0u32;
    let range = upload.manifest.segment_indexes.and_then(|s| s.offset);
    if let (Some(range), Some(indexes)) = (range, &upload.indexes) {
        let bytes = range.bytes_in(upload.manifest_key.as_ref(), indexes.size)?;
        let index = archive.fetch_range(&indexes.location, bytes).await?;
        if let Some((_, at)) = offset_index_last(indexes.location.as_ref(), &index)? {
            position = at;
        }
    }
    if position > 0 && position >= chunks.original_file_size {
        return Err(corrupt_metadata(
            upload.indexes.as_ref().map_or(log, |i| i.location.as_ref()),
            0,
            format!("offset index points at byte {position}, past the {}-byte segment", chunks.original_file_size),
        ));
    }
    let first = (position / chunks.original_chunk_size) as usize;
    let from = chunks.transformed_offset(first);
    let tail = archive.fetch_range(&upload.log.location, from..chunks.transformed_offset(chunks.len())).await?;
    let plain = chunks.untransform_from(log, &tail, first)?;
    let skip = (position - first as u32 * chunks.original_chunk_size) as usize;
    let walk = walk_batches(log, plain.get(skip..).unwrap_or_default(), u64::from(position), false)?;
    walk.map(|w| w.next_offset).ok_or_else(|| Error::CorruptBatch {
        object: log.to_string(),
        byte_offset: u64::from(position),
        reason: "holds no record batch".into(),
    })
}

impl Kip405Layout {
    /// Drops the uploads Kafka does not consider valid and says, in the returned notes, which rule
    /// decided and what it dropped.
    ///
    /// With the remote log metadata, an upload is a candidate only if its segment's latest state
    /// is COPY_SEGMENT_FINISHED (and its partition's remote log is not being deleted); its leader
    /// epochs are then the metadata's, and so is its end offset where the manifest gives none (if
    /// the metadata makes no upload of the partition valid, listing fails naming the directory).
    /// Then, with or without metadata, every
    /// candidate must lie on the partition's leader-epoch lineage: the leader-epoch checkpoint
    /// uploaded with the newest candidate (highest leader epoch, then end offset) when its
    /// `.indexes` holds one, else the candidates' own epochs, newest first. An upload by a leader
    /// whose log was truncated afterwards (its records of an epoch run past the next epoch's start)
    /// is dropped. Without metadata the newest upload is trusted: a divergent upload no later
    /// leader has superseded cannot be told apart.
    async fn validate(
        &self,
        archive: &Archive,
        topic_id: &str,
        partition: i32,
        uploads: Vec<Upload>,
    ) -> Result<(Vec<Upload>, Vec<String>)> {
        let mut notes = Vec::new();
        let mut dropped = Vec::new();
        let dir = uploads.first().map(|u| u.log.location.as_ref().rsplit_once('/').map_or("", |(d, _)| d).to_string());
        let mut kept = Vec::with_capacity(uploads.len());
        let rule = match &self.metadata {
            Some(metadata) => {
                // By topic id: a topic deleted and recreated under the same name is another topic.
                let listed = metadata.partition(topic_id, partition);
                let deleted = metadata.is_deleted(topic_id, partition);
                for mut upload in uploads {
                    let why = match listed.and_then(|l| l.get(&upload.id)) {
                        _ if deleted => Some("the partition's remote log is being deleted".to_string()),
                        None => Some("not in the remote log metadata".to_string()),
                        Some(segment) if segment.state != SegmentState::CopyFinished => {
                            Some(format!("its state is {}", segment.state.name()))
                        }
                        Some(segment) => {
                            upload.epochs = segment.leader_epochs.clone();
                            upload.next = upload.next.or(segment.end_offset.checked_add(1));
                            None
                        }
                    };
                    match why {
                        Some(why) => {
                            dropped.push(format!("dropped upload {} at offset {}: {why}", upload.id, upload.base))
                        }
                        None => kept.push(upload),
                    }
                }
                if kept.is_empty() {
                    if let Some(dir) = dir {
                        // Every upload dropped: say so, rather than replay nothing in silence.
                        return Err(Error::Inconsistent {
                            object: dir,
                            reason: format!(
                                "the remote log metadata makes none of its uploads valid ({}); check that \
                                 --remote-log-metadata names this cluster's brokers",
                                dropped.join("; ")
                            ),
                        });
                    }
                }
                "validity: remote log metadata (COPY_SEGMENT_FINISHED) and the leader-epoch lineage"
            }
            None => {
                kept = uploads;
                "validity: the leader-epoch lineage of the newest upload (no remote log metadata given)"
            }
        };
        notes.push(rule.to_string());
        let newest = kept
            .iter()
            .filter(|u| !u.epochs.is_empty())
            .max_by_key(|u| (u.epochs.keys().next_back().copied(), u.next, std::cmp::Reverse(u.id.clone())));
        let Some(newest) = newest else {
            notes.push("no upload records its leader epochs: none can be checked".into());
            notes.extend(dropped);
            return Ok((kept, notes));
        };
        let checkpoint = match (newest.manifest.segment_indexes.and_then(|s| s.leader_epoch), &newest.indexes) {
            (Some(range), Some(indexes)) if range.size > 0 => {
                let bytes = range.bytes_in(newest.manifest_key.as_ref(), indexes.size)?;
                let text = archive.fetch_range(&indexes.location, bytes).await?;
                Some(Lineage::parse_checkpoint(indexes.location.as_ref(), &text)?)
            }
            _ => None,
        };
        let lineage = match checkpoint {
            Some(lineage) => {
                notes.push(format!("lineage from the leader-epoch checkpoint of upload {}", newest.id));
                lineage
            }
            None => {
                // The newest upload's epochs, then older epochs from older uploads; each epoch
                // starting at the least start any upload gives it (a segment may begin mid-epoch).
                let mut order: Vec<&Upload> = kept.iter().filter(|u| !u.epochs.is_empty()).collect();
                order.sort_by_key(|u| std::cmp::Reverse((u.epochs.keys().next_back().copied(), u.next)));
                let mut lineage: BTreeMap<i32, Offset> = BTreeMap::new();
                for upload in order {
                    let least = lineage.keys().next().copied();
                    for (&epoch, &start) in &upload.epochs {
                        if least.is_none_or(|least| epoch < least) {
                            lineage.insert(epoch, start);
                        } else if let Some(known) = lineage.get_mut(&epoch) {
                            *known = (*known).min(start);
                        }
                    }
                }
                notes.push(format!("lineage from the uploads' leader epochs, newest upload {}", newest.id));
                Lineage(lineage)
            }
        };
        kept.retain(|upload| {
            let Some(last) = upload.next.and_then(|n| n.checked_sub(1)) else { return true };
            match lineage.diverges(&upload.epochs, last) {
                Some(why) => {
                    dropped.push(format!(
                        "dropped upload {} at offset {}: off the leader-epoch lineage ({why})",
                        upload.id, upload.base
                    ));
                    false
                }
                None => true,
            }
        });
        notes.extend(dropped);
        Ok((kept, notes))
    }
}

impl ArchiveLayout for Kip405Layout {
    fn name(&self) -> &'static str {
        "kip405"
    }

    fn partitions<'a>(&'a self, archive: &'a Archive, topic: &'a str) -> BoxFuture<'a, Result<Vec<i32>>> {
        async move {
            let Some(dir) = self.topic_dir(archive, topic).await? else { return Ok(Vec::new()) };
            archive.list_numbered_dirs(&dir).await
        }
        .boxed()
    }

    fn list<'a>(&'a self, archive: &'a Archive, topic: &'a str, partition: i32) -> BoxFuture<'a, Result<Listing>> {
        async move {
            let Some(topic_dir) = self.topic_dir(archive, topic).await? else { return Ok(Listing::default()) };
            let dir = topic_dir.clone().join(partition.to_string());
            let objects = archive.list_objects(&dir).await?;
            let mut logs = Vec::new();
            for meta in &objects {
                let name = meta.location.filename().unwrap_or_default();
                let Some(stem) = name.strip_suffix(".log") else { continue };
                let Some((base, id)) = stem.split_once('-') else { continue };
                let Ok(base) = base.parse::<i64>() else { continue };
                logs.push((base, id.to_string(), meta.clone()));
            }
            let objects: HashMap<String, ObjectMeta> =
                objects.into_iter().map(|meta| (meta.location.to_string(), meta)).collect();
            let bases: BTreeSet<Offset> = logs.iter().map(|(base, ..)| *base).collect();
            // Manifests only, a few at once: no segment is read to list them.
            let objects = &objects;
            let uploads: Vec<Option<Upload>> = futures::stream::iter(logs)
                .map(|(base, id, log)| read_upload(archive, base, id, log, objects))
                .buffered(CONCURRENT_MANIFESTS)
                .try_collect()
                .await?;
            let uploads: Vec<Upload> = uploads.into_iter().flatten().collect();
            if let Some(unfinished) = bases.iter().find(|b| !uploads.iter().any(|u| u.base == **b)) {
                return Err(Error::Inconsistent {
                    object: dir.to_string(),
                    reason: format!("no upload of the segment at offset {unfinished} has a manifest: none finished"),
                });
            }
            let topic_id = topic_dir.filename().and_then(topic_id_of).unwrap_or_default();
            let (uploads, mut validity) = self.validate(archive, &topic_id, partition, uploads).await?;
            let mut by_base: BTreeMap<Offset, Vec<Upload>> = BTreeMap::new();
            for upload in uploads {
                by_base.entry(upload.base).or_default().push(upload);
            }
            let mut chosen = Vec::with_capacity(by_base.len());
            for (base, mut candidates) in by_base {
                // Most offsets first, then the smallest segment id.
                candidates.sort_by(|a, b| {
                    (b.next, b.chunks.original_file_size)
                        .cmp(&(a.next, a.chunks.original_file_size))
                        .then(a.id.cmp(&b.id))
                });
                let others = candidates.len() - 1;
                let Some(upload) = candidates.into_iter().next() else { continue };
                let mut note = (others > 0)
                    .then(|| format!("offset {base}: {} uploads, reading segment {}", others + 1, upload.id));
                if chosen.is_empty() {
                    // What decided validity is said once per partition, with the first segment.
                    validity.extend(note);
                    note = Some(validity.join("; "));
                    validity = Vec::new();
                }
                chosen.push((upload, note));
            }
            let mut segments = Vec::with_capacity(chosen.len());
            let mut holes = Vec::new();
            for (i, (upload, note)) in chosen.iter().enumerate() {
                let following = chosen.get(i + 1).map(|(u, _)| u);
                let chunked = Transform::Chunked(upload.chunks.clone());
                let mut note = note.clone();
                let (next_offset, transform) = match (upload.next, following) {
                    (Some(next), Some(following)) => {
                        if next > following.base {
                            return Err(Error::Inconsistent {
                                object: upload.log.location.to_string(),
                                reason: format!(
                                    "holds offsets up to {}, past the next segment's base {}",
                                    next - 1,
                                    following.base
                                ),
                            });
                        }
                        if next < following.base {
                            holes.push(Hole {
                                topic: topic.to_string(),
                                partition,
                                expected_offset: next,
                                found_offset: following.base,
                                object: following.log.location.to_string(),
                            });
                        }
                        (next, chunked)
                    }
                    (Some(next), None) => (next, chunked),
                    // No metadata: the segment ends where the next begins, and its batches must
                    // reach that far (Kafka's segments are contiguous), or one is missing between.
                    (None, Some(following)) => (
                        following.base,
                        Transform::MustReach(Arc::new(MustReach {
                            inner: chunked,
                            topic: topic.to_string(),
                            partition,
                            base_offset: upload.base,
                            relative: false,
                            next_offset: following.base,
                            next_object: following.log.location.to_string(),
                        })),
                    ),
                    (None, None) => match tail_end(archive, upload).await {
                        Ok(next) => (next, chunked),
                        Err(error @ Error::ObjectStore { .. }) => return Err(error),
                        // A damaged upload still lists (its end then unknown): replay and `verify`
                        // report the damage by object when they read it.
                        Err(damage) => {
                            let next = upload.base.checked_add(1).ok_or_else(|| Error::InvalidKey {
                                object: upload.log.location.to_string(),
                                reason: format!("base offset {} leaves no next offset", upload.base),
                            })?;
                            let unread = format!("offset {}: the segment's end cannot be read: {damage}", upload.base);
                            note = Some(note.map_or(unread.clone(), |n| format!("{n}; {unread}")));
                            (next, chunked)
                        }
                    },
                };
                if next_offset <= upload.base {
                    return Err(Error::Inconsistent {
                        object: upload.log.location.to_string(),
                        reason: format!("ends at offset {next_offset}, before it starts ({})", upload.base),
                    });
                }
                segments.push(SegmentRef {
                    key: upload.log.location.clone(),
                    base_offset: upload.base,
                    next_offset,
                    size: upload.log.size,
                    relative_offsets: false,
                    aborted: Default::default(),
                    transform,
                    note,
                });
            }
            Ok(Listing { segments, holes })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::conformance::{check_layout, history};
    use crate::segment::{control_record, encode_batch_full, encode_batch_with, BatchOptions, Codec};
    use kappa_engine::{PartitionId, SourceFactory};
    use object_store::ObjectStoreExt;
    use proptest::prelude::*;

    fn put(archive: &Archive, key: &Path, bytes: Vec<u8>) {
        crate::archive::runtime().block_on(archive.store.put(key, bytes.into())).expect("put");
    }

    #[test]
    fn variable_size_lists_decode_like_the_published_example() {
        // The format's own test vector: sizes 10, 20, 30.
        let list = decode_variable_sizes("m", "KLUv/SAPeQAAAAAAAwAAAAoBAAoAAAAe", 3).expect("decodes");
        assert_eq!(list.iter().collect::<Vec<_>>(), vec![10, 20, 30]);
        let sizes = vec![7, 300, 12, 90_000, 5];
        let list = decode_variable_sizes("m", &encode_variable_sizes(&sizes), 5).expect("round trips");
        assert_eq!(list.iter().collect::<Vec<_>>(), sizes);
        assert!(matches!(
            decode_variable_sizes("m", &encode_variable_sizes(&sizes), 4),
            Err(Error::CorruptMetadata { .. })
        ));
    }

    /// Writes `history()` as an Aiven RSM upload: zstd chunks of 200 bytes, variable index.
    /// Partitions 0 and 1 have manifests with `remoteLogSegmentMetadata`; partition 2's manifests
    /// lack it (as older plugin versions write them) and its `.indexes` hold an offset index, and
    /// its first segment has a second, shorter upload. Returns the segment to damage and the
    /// middle segment of partition 1 to delete.
    fn write_kip405(archive: &Archive) -> (Path, Path) {
        let (mut victim, mut missing) = (None, None);
        for (p, records) in history() {
            let last_chunk = (records.len() - 1) / 16;
            for (n, chunk) in records.chunks(16).enumerate() {
                let mut plain = Vec::new();
                let mut index = Vec::new();
                // Partition 0 ends with a committed transaction: its batches and the commit marker.
                let txn = p == 0 && n == last_chunk;
                let codec = if n % 2 == 0 { Codec::Lz4 } else { Codec::None };
                let options =
                    BatchOptions { codec, producer_id: if txn { 9 } else { -1 }, transactional: txn, control: false };
                let base = chunk[0].offset;
                for batch in chunk.chunks(5) {
                    if !plain.is_empty() {
                        index.extend(((batch[batch.len() - 1].offset - base) as u32).to_be_bytes());
                        index.extend((plain.len() as u32).to_be_bytes());
                    }
                    encode_batch_full(batch, &options, &mut plain);
                }
                let mut end = chunk[chunk.len() - 1].offset + 1;
                if txn {
                    let marker = control_record(end, 0, true);
                    encode_batch_full(&[marker], &BatchOptions { control: true, ..options }, &mut plain);
                    end += 1;
                }
                let dir = format!("t-AAAAAAAAAAAAAAAAAAAAAA/{p}");
                let mut uploads = vec![("5f1d", plain.clone(), end)];
                if p == 2 && n == 0 {
                    let mut shorter = Vec::new();
                    encode_batch_with(&chunk[..5], Codec::None, &mut shorter);
                    uploads.push(("0a0a", shorter, chunk[5].offset));
                }
                for (id, plain, end) in uploads {
                    let original_chunk = 200usize;
                    let mut transformed = Vec::new();
                    let mut sizes = Vec::new();
                    for c in plain.chunks(original_chunk) {
                        let z = crate::segment::compression::compress(Codec::Zstd, c);
                        sizes.push(z.len() as u32);
                        transformed.extend(z);
                    }
                    let mut manifest = serde_json::json!({
                        "version": "1",
                        "chunkIndex": {"type": "variable", "originalChunkSize": original_chunk,
                                       "originalFileSize": plain.len(), "transformedChunks": encode_variable_sizes(&sizes)},
                        "segmentIndexes": {},
                        "compression": true,
                    });
                    if p == 2 {
                        let at = |position: usize, size: usize| serde_json::json!({"position": position, "size": size});
                        let n = index.len();
                        manifest["segmentIndexes"] = serde_json::json!({"offset": at(0, n), "timestamp": at(n, 0),
                            "producerSnapshot": at(n, 0), "leaderEpoch": at(n, 0)});
                        put(archive, &archive.key(&format!("{dir}/{base:020}-{id}.indexes")), index.clone());
                    } else {
                        manifest["remoteLogSegmentMetadata"] = serde_json::json!({
                            "remoteLogSegmentId": {"topicIdPartition": {"topicId": "AAAAAAAAAAAAAAAAAAAAAA",
                                "topicPartition": {"topic": "t", "partition": p}}, "id": id},
                            "startOffset": base, "endOffset": end - 1, "maxTimestampMs": 0, "brokerId": 0,
                            "eventTimestampMs": 0, "segmentLeaderEpochs": {"0": base}});
                    }
                    let log = archive.key(&format!("{dir}/{base:020}-{id}.log"));
                    put(archive, &log, transformed);
                    let m = archive.key(&format!("{dir}/{base:020}-{id}.rsm-manifest"));
                    put(archive, &m, serde_json::to_vec(&manifest).expect("json"));
                    if p == 1 && n == 1 {
                        victim.get_or_insert(log.clone());
                    }
                    if p == 1 && n == 2 {
                        missing.get_or_insert(log);
                    }
                }
            }
        }
        (victim.expect("written"), missing.expect("written"))
    }

    fn kip405_archive(name: &str) -> (Archive, Path, Path) {
        let archive = Archive::open(&format!("memory://{name}")).expect("opens");
        let archive = Archive { layout: Arc::new(Kip405Layout::default()), ..archive };
        let (victim, missing) = write_kip405(&archive);
        (archive, victim, missing)
    }

    #[test]
    fn kip405_layout_conforms_and_picks_one_of_several_uploads() {
        let (archive, victim, missing) = kip405_archive("conformance-kip405");
        let segments =
            crate::archive::runtime().block_on(Kip405Layout::default().segments(&archive, "t", 2)).expect("lists");
        assert!(segments[0].note.as_deref().is_some_and(|n| n.contains("2 uploads, reading segment 5f1d")));
        let detected = Archive::open_layout("memory://conformance-kip405", None, None).expect("opens");
        assert_eq!(detected.layout.name(), "kip405");
        let summary = crate::inspect::summarize(&archive, "t").expect("summarizes");
        assert_eq!(summary.partitions[&0].control_batches, 1, "the commit marker is skipped");
        assert!(summary.transactions_note().expect("has a transaction").contains("does not record"));
        check_layout(&archive, "t", &history(), &victim, &missing);
    }

    #[test]
    fn end_offsets_come_from_manifests_and_the_last_segments_tail_without_reading_segments() {
        let (archive, ..) = kip405_archive("kip405-ends");
        // Where manifests give end offsets, listing reads no segment: garbage in place of the
        // last segments of partitions 0 and 1 (same sizes) changes nothing.
        for p in [0, 1] {
            let segments =
                crate::archive::runtime().block_on(Kip405Layout::default().segments(&archive, "t", p)).expect("lists");
            let last = segments.last().expect("segments");
            put(&archive, &last.key, vec![0x5a; last.size as usize]);
        }
        let replay = crate::ReplaySource::open(archive.clone(), "t").expect("opens");
        // Partition 0 ends with its commit marker (from the manifest); partition 2's last segment
        // has no metadata: its end comes from the tail its offset index points at.
        let history = history();
        let last = |p: usize| history[p].1.last().expect("records").offset;
        assert_eq!(replay.end_offsets(), BTreeMap::from([(0, last(0) + 2), (1, last(1) + 1), (2, last(2) + 1)]));
    }

    #[test]
    fn a_last_segment_without_metadata_is_read_from_its_tail_only() {
        let archive = Archive::open("memory://kip405-tail").expect("opens");
        let archive = Archive { layout: Arc::new(Kip405Layout::default()), ..archive };
        let dir = "t-AAAAAAAAAAAAAAAAAAAAAA/0";
        let records: Vec<kappa_engine::Record> = history()[0].1.clone();
        let base = records[0].offset;
        let (mut plain, mut index) = (Vec::new(), Vec::new());
        for batch in records.chunks(3) {
            if !plain.is_empty() {
                index.extend(((batch[batch.len() - 1].offset - base) as u32).to_be_bytes());
                index.extend((plain.len() as u32).to_be_bytes());
            }
            encode_batch_with(batch, Codec::None, &mut plain);
        }
        let (mut transformed, mut sizes) = (Vec::new(), Vec::new());
        for c in plain.chunks(100) {
            let z = crate::segment::compression::compress(Codec::Zstd, c);
            sizes.push(z.len() as u32);
            transformed.extend(z);
        }
        // Garbage in place of the first chunk: only a reader of the whole segment would see it.
        transformed[..sizes[0] as usize].fill(0x5a);
        let manifest = serde_json::json!({
            "chunkIndex": {"type": "variable", "originalChunkSize": 100, "originalFileSize": plain.len(),
                           "transformedChunks": encode_variable_sizes(&sizes)},
            "segmentIndexes": {"offset": {"position": 0, "size": index.len()}},
            "compression": true,
        });
        put(&archive, &archive.key(&format!("{dir}/{base:020}-a.log")), transformed);
        put(
            &archive,
            &archive.key(&format!("{dir}/{base:020}-a.rsm-manifest")),
            serde_json::to_vec(&manifest).expect("json"),
        );
        put(&archive, &archive.key(&format!("{dir}/{base:020}-a.indexes")), index);
        let segments =
            crate::archive::runtime().block_on(Kip405Layout::default().segments(&archive, "t", 0)).expect("lists");
        assert_eq!(segments[0].next_offset, records[records.len() - 1].offset + 1);
        let note = segments[0].note.as_deref().expect("the validity rule is stated");
        assert!(note.starts_with("validity:") && !note.contains("cannot be read"), "{note}");
        // Without the offset index the whole segment is walked, and its damage noted.
        crate::archive::runtime()
            .block_on(archive.store.delete(&archive.key(&format!("{dir}/{base:020}-a.indexes"))))
            .expect("delete");
        let segments =
            crate::archive::runtime().block_on(Kip405Layout::default().segments(&archive, "t", 0)).expect("lists");
        assert!(segments[0].note.as_deref().is_some_and(|n| n.contains("end cannot be read")), "{:?}", segments[0]);
    }

    #[test]
    fn a_missing_segment_without_manifest_metadata_fails_replay_when_the_one_before_is_read() {
        let (archive, ..) = kip405_archive("kip405-hole-no-metadata");
        let segments =
            crate::archive::runtime().block_on(Kip405Layout::default().segments(&archive, "t", 2)).expect("lists");
        let gone = segments[2].clone();
        crate::archive::runtime().block_on(archive.store.delete(&gone.key)).expect("delete");
        // The listing cannot see it (no end offsets), so opening succeeds; reading the segment
        // before the hole shows its batches end early.
        let replay = crate::ReplaySource::open(archive.clone(), "t").expect("opens");
        let mut reader = replay.open(&[(PartitionId::new("t", 2), None)]).expect("reader");
        let (mut out, mut finished) = (Vec::new(), Vec::new());
        let error = loop {
            match reader.poll(&mut out, &mut finished) {
                Err(e) => break e,
                Ok(_) => assert!(finished.is_empty(), "replay over a missing segment must fail"),
            }
            std::thread::yield_now();
        };
        let error = error.downcast::<Error>().expect("a replay error");
        assert!(
            matches!(*error, Error::ArchiveHole { partition: 2, expected_offset, found_offset, .. }
                if expected_offset == gone.base_offset && found_offset == gone.next_offset),
            "{error}"
        );
        let summary = crate::inspect::summarize(&archive, "t").expect("summarizes");
        assert_eq!(summary.partitions[&2].holes.len(), 1);
        assert_eq!(summary.partitions[&2].records, history()[2].1.len() as u64 - 16, "the rest is still read");
    }

    fn manifest(json: &str) -> Result<Manifest> {
        Manifest::parse("m.rsm-manifest", json.as_bytes())
    }

    #[test]
    fn a_200_byte_manifest_claiming_4_billion_chunks_is_refused_before_allocating() {
        let json = r#"{"chunkIndex":{"type":"fixed","originalChunkSize":1,"originalFileSize":4294967295,
            "transformedChunkSize":1,"finalTransformedChunkSize":1},"segmentIndexes":{},"compression":true}"#;
        assert!(json.len() <= 200);
        let err = manifest(json).and_then(|m| m.chunks("m.rsm-manifest", 1_000)).expect_err("refused");
        assert!(matches!(err, Error::CorruptMetadata { .. }), "{err}");
        // Within Kafka's segment size, the object's size still bounds the chunk count.
        let json = json.replace("4294967295", "2000000000");
        let err = manifest(&json).and_then(|m| m.chunks("m.rsm-manifest", 1_000)).expect_err("refused");
        assert!(err.to_string().contains("2000000000 chunks") && err.to_string().contains("1000 bytes"), "{err}");
        // A variable list of width 0 claims any count in 13 bytes.
        let mut raw = u32::MAX.to_be_bytes().to_vec();
        raw.extend([0, 0, 0, 1, 0, 0, 0, 0, 1]);
        let list = base64_encode(&crate::segment::compression::compress(Codec::Zstd, &raw));
        let err = decode_variable_sizes("m", &list, 1_000).expect_err("refused");
        assert!(matches!(err, Error::CorruptMetadata { .. }), "{err}");
        let zero = r#"{"chunkIndex":{"type":"fixed","originalChunkSize":0,"originalFileSize":10,
            "transformedChunkSize":1,"finalTransformedChunkSize":1},"compression":false}"#;
        assert!(matches!(manifest(zero).and_then(|m| m.chunks("m", 10)), Err(Error::CorruptMetadata { .. })));
    }

    #[test]
    fn truncated_or_garbage_manifests_name_the_object_and_byte() {
        let good = r#"{"chunkIndex":{"type":"fixed","originalChunkSize":100,"originalFileSize":250,
            "transformedChunkSize":100,"finalTransformedChunkSize":50},"compression":false}"#;
        assert_eq!(manifest(good).and_then(|m| m.chunks("m", 250)).expect("reads").len(), 3);
        let err = manifest(&good[..40]).expect_err("truncated");
        assert!(matches!(err, Error::CorruptMetadata { byte_offset: 39, .. }), "the last byte read: {err}");
        assert!(err.to_string().contains("m.rsm-manifest"), "{err}");
        let err = manifest("\u{1}garbage").expect_err("garbage");
        assert!(matches!(err, Error::CorruptMetadata { byte_offset: 0, .. }), "{err}");
        let bad_list = r#"{"chunkIndex":{"type":"variable","originalChunkSize":100,"originalFileSize":250,
            "transformedChunks":"@@@@"},"compression":true}"#;
        let err = manifest(bad_list).and_then(|m| m.chunks("m", 250)).expect_err("bad base64");
        assert!(matches!(err, Error::CorruptMetadata { .. }), "{err}");
    }

    #[test]
    fn manifest_end_offsets_near_i64_max_are_named_errors() {
        let at = |start: i64, end: i64| {
            format!(
                r#"{{"chunkIndex":{{"type":"fixed","originalChunkSize":100,"originalFileSize":250,
                "transformedChunkSize":100,"finalTransformedChunkSize":50}},"compression":false,
                "remoteLogSegmentMetadata":{{"startOffset":{start},"endOffset":{end}}}}}"#
            )
        };
        let m = manifest(&at(i64::MAX, i64::MAX)).expect("parses");
        let err = m.next_offset("m", i64::MAX).expect_err("no next offset");
        assert!(matches!(err, Error::CorruptMetadata { byte_offset, .. } if byte_offset > 0), "{err}");
        let m = manifest(&at(10, 5)).expect("parses");
        assert!(matches!(m.next_offset("m", 10), Err(Error::CorruptMetadata { .. })));
        assert!(matches!(m.next_offset("m", 11), Err(Error::Inconsistent { .. })));
        assert_eq!(manifest(&at(10, 19)).expect("parses").next_offset("m", 10).expect("reads"), Some(20));
    }

    #[test]
    fn a_last_segment_keyed_at_i64_max_lists_with_a_named_error() {
        let archive = Archive::open("memory://kip405-i64-max").expect("opens");
        let archive = Archive { layout: Arc::new(Kip405Layout::default()), ..archive };
        let dir = "t-AAAAAAAAAAAAAAAAAAAAAA/0";
        let base = i64::MAX;
        put(&archive, &archive.key(&format!("{dir}/{base:020}-x.log")), b"not batches".to_vec());
        let json = r#"{"chunkIndex":{"type":"fixed","originalChunkSize":100,"originalFileSize":11,
            "transformedChunkSize":11,"finalTransformedChunkSize":11},"compression":false}"#;
        put(&archive, &archive.key(&format!("{dir}/{base:020}-x.rsm-manifest")), json.as_bytes().to_vec());
        let err = crate::archive::runtime()
            .block_on(Kip405Layout::default().segments(&archive, "t", 0))
            .expect_err("refused");
        assert!(matches!(&err, Error::InvalidKey { object, .. } if object.contains("09223372036854775807")), "{err}");
    }

    #[test]
    fn offset_indexes_read_their_last_entry_and_refuse_partial_or_negative_ones() {
        let entries: Vec<u8> = [(3u32, 4096u32), (9, 9000), (0, 0), (0, 0)]
            .iter()
            .flat_map(|(r, p)| r.to_be_bytes().into_iter().chain(p.to_be_bytes()))
            .collect();
        assert_eq!(offset_index_last("i", &entries).expect("reads"), Some((9, 9000)), "preallocated zeros end it");
        assert_eq!(offset_index_last("i", &[]).expect("reads"), None);
        assert!(matches!(offset_index_last("i", &entries[..13]), Err(Error::CorruptMetadata { byte_offset: 8, .. })));
        let negative = [0xff; 8];
        assert!(matches!(offset_index_last("i", &negative), Err(Error::CorruptMetadata { byte_offset: 0, .. })));
        let range = IndexRange { position: 10, size: i64::MAX };
        assert!(matches!(range.bytes_in("m", 100), Err(Error::CorruptMetadata { .. })));
        assert_eq!(IndexRange { position: 10, size: 20 }.bytes_in("m", 30).expect("inside"), 10..30);
    }

    #[test]
    fn encrypted_segments_are_refused_clearly() {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "chunkIndex": {"type": "fixed", "originalChunkSize": 100, "originalFileSize": 250,
                           "transformedChunkSize": 110, "finalTransformedChunkSize": 30},
            "compression": false, "encryption": {"dataKey": "x"}
        }))
        .expect("parses");
        let err = manifest.chunks("m", 250).expect_err("refused");
        assert!(matches!(err, Error::UnsupportedFormat { .. }) && err.to_string().contains("encrypted"), "{err}");
        let plain: Manifest = serde_json::from_value(serde_json::json!({
            "chunkIndex": {"type": "fixed", "originalChunkSize": 100, "originalFileSize": 250,
                           "transformedChunkSize": 110, "finalTransformedChunkSize": 30},
            "compression": false
        }))
        .expect("parses");
        let chunks = plain.chunks("m", 250).expect("readable");
        assert_eq!(chunks.sizes().collect::<Vec<_>>(), vec![(100, 110), (100, 110), (50, 30)]);
    }

    proptest! {
        #[test]
        fn any_manifest_bytes_parse_or_fail_with_a_named_error(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            log_size in 0u64..100_000,
        ) {
            match Manifest::parse("m", &bytes).and_then(|m| m.chunks("m", log_size)) {
                Ok(chunks) => prop_assert!(chunks.len() as u64 <= log_size.max(1)),
                Err(Error::CorruptMetadata { .. } | Error::UnsupportedFormat { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }

        #[test]
        fn any_chunk_index_numbers_are_bounded_by_the_object(
            chunk in any::<u32>(), file in any::<u32>(), t in any::<u32>(), last in any::<u32>(), log_size in 0u64..10_000,
        ) {
            let json = serde_json::json!({"chunkIndex": {"type": "fixed", "originalChunkSize": chunk,
                "originalFileSize": file, "transformedChunkSize": t, "finalTransformedChunkSize": last},
                "compression": true});
            let parsed = Manifest::parse("m", &serde_json::to_vec(&json).expect("json"));
            if let Ok(chunks) = parsed.and_then(|m| m.chunks("m", log_size)) {
                prop_assert!(chunks.len() as u64 <= log_size.max(1));
                let bytes = Bytes::from(vec![0u8; log_size as usize]);
                prop_assert!(chunks.untransform("m.log", &bytes).is_err() || chunks.original_file_size() == 0);
            }
        }
    }

    /// One uncompressed upload of records `range` (values `{tag}{offset}`) with leader `epochs`.
    fn upload(
        archive: &Archive,
        id: u8,
        range: std::ops::RangeInclusive<i64>,
        tag: &str,
        epochs: &[(i32, i64)],
    ) -> String {
        use crate::layout::remote_log_metadata::uuid_string;
        let records: Vec<kappa_engine::Record> = range
            .clone()
            .map(|o| kappa_engine::Record {
                offset: o,
                timestamp: Some(o),
                key: None,
                value: Some(Bytes::from(format!("{tag}{o}"))),
            })
            .collect();
        let mut plain = Vec::new();
        for batch in records.chunks(4) {
            encode_batch_with(batch, Codec::None, &mut plain);
        }
        let id = uuid_string(&[id; 16]);
        let (base, n) = (*range.start(), plain.len());
        let epochs: serde_json::Map<String, serde_json::Value> =
            epochs.iter().map(|(e, o)| (e.to_string(), (*o).into())).collect();
        let manifest = serde_json::json!({
            "chunkIndex": {"type": "fixed", "originalChunkSize": n, "originalFileSize": n,
                           "transformedChunkSize": n, "finalTransformedChunkSize": n},
            "segmentIndexes": {}, "compression": false,
            "remoteLogSegmentMetadata": {"startOffset": base, "endOffset": range.end(), "segmentLeaderEpochs": epochs},
        });
        let dir = "t-AAAAAAAAAAAAAAAAAAAAAA/0";
        put(archive, &archive.key(&format!("{dir}/{base:020}-{id}.log")), plain);
        put(
            archive,
            &archive.key(&format!("{dir}/{base:020}-{id}.rsm-manifest")),
            serde_json::to_vec(&manifest).expect("json"),
        );
        id
    }

    /// Offsets 0..=49 uploaded by three leaders: epoch 0 (0..=9), then a leader of epoch 1 that
    /// uploaded 10..=29 (`stale`) but was truncated at 20 when the leader of epoch 2 took over,
    /// which uploaded 10..=19 and 20..=39 again, and 40..=49 (an upload the metadata may call
    /// unfinished). Returns the archive and the ids (0..=4: A, stale B, C1, C2, D).
    fn diverged(name: &str, metadata: Option<RemoteLogMetadata>) -> (Archive, Vec<String>) {
        let archive = Archive::open(&format!("memory://{name}")).expect("opens");
        let layout = Kip405Layout { metadata: metadata.map(Arc::new) };
        let archive = Archive { layout: Arc::new(layout), ..archive };
        let ids = vec![
            upload(&archive, 1, 0..=9, "a", &[(0, 0)]),
            upload(&archive, 2, 10..=29, "stale", &[(1, 10)]),
            upload(&archive, 3, 10..=19, "c", &[(1, 10)]),
            upload(&archive, 4, 20..=39, "c", &[(2, 20)]),
            upload(&archive, 5, 40..=49, "d", &[(2, 40)]),
        ];
        (archive, ids)
    }

    #[test]
    fn the_lineage_comes_from_the_newest_uploads_leader_epoch_checkpoint_when_it_has_one() {
        let (archive, ids) = diverged("kip405-checkpoint", None);
        let dir = "t-AAAAAAAAAAAAAAAAAAAAAA/0";
        let checkpoint = b"0\n3\n0 0\n1 10\n2 20\n".to_vec();
        let manifest_key = archive.key(&format!("{dir}/{:020}-{}.rsm-manifest", 40, ids[4]));
        let bytes = crate::archive::runtime().block_on(archive.fetch(&manifest_key)).expect("manifest");
        let mut manifest: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        manifest["segmentIndexes"] = serde_json::json!({"leaderEpoch": {"position": 0, "size": checkpoint.len()}});
        put(&archive, &manifest_key, serde_json::to_vec(&manifest).expect("json"));
        put(&archive, &archive.key(&format!("{dir}/{:020}-{}.indexes", 40, ids[4])), checkpoint);
        let (records, notes) = read_all(&archive);
        assert_eq!(records.len(), 50);
        let notes = notes.join("; ");
        assert!(notes.contains(&format!("lineage from the leader-epoch checkpoint of upload {}", ids[4])), "{notes}");
        assert!(notes.contains(&format!("dropped upload {} at offset 10", ids[1])), "{notes}");
        // A checkpoint in which epoch 2 begins later puts the upload at 20 off the lineage: its
        // offsets are then a hole, which listing refuses.
        put(
            &archive,
            &archive.key(&format!("{dir}/{:020}-{}.indexes", 40, ids[4])),
            b"0\n3\n0 0\n1 10\n2 25\n".to_vec(),
        );
        let error = crate::archive::runtime().block_on(archive.layout.segments(&archive, "t", 0)).expect_err("a hole");
        assert!(matches!(error, Error::ArchiveHole { expected_offset: 20, found_offset: 40, .. }), "{error}");
    }

    fn read_all(archive: &Archive) -> (Vec<kappa_engine::Record>, Vec<String>) {
        let segments = crate::archive::runtime().block_on(archive.layout.segments(archive, "t", 0)).expect("lists");
        let mut records = Vec::new();
        for segment in &segments {
            let bytes = crate::archive::runtime().block_on(archive.fetch(&segment.key)).expect("fetch");
            records.extend(crate::source::decode_checked_summary(segment, &bytes, 0).expect("decodes").0);
        }
        (records, segments.iter().filter_map(|s| s.note.clone()).collect())
    }

    #[test]
    fn an_upload_off_the_leader_epoch_lineage_is_dropped_and_inspect_says_why() {
        let (archive, ids) = diverged("kip405-lineage", None);
        let (records, notes) = read_all(&archive);
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..50).collect::<Vec<_>>());
        assert!(
            records.iter().all(|r| !r.value.as_ref().expect("value").starts_with(b"stale")),
            "the truncated leader's records are not read"
        );
        let notes = notes.join("; ");
        assert!(notes.contains("no remote log metadata given"), "{notes}");
        assert!(
            notes.contains(&format!("dropped upload {} at offset 10: off the leader-epoch lineage", ids[1])),
            "{notes}"
        );
        let summary = crate::inspect::summarize(&archive, "t").expect("summarizes");
        assert!(summary.partitions[&0].notes.iter().any(|n| n.contains("off the leader-epoch lineage")));
    }

    #[test]
    fn with_remote_log_metadata_only_finished_uploads_on_the_lineage_are_read() {
        use crate::layout::remote_log_metadata::{encode, MetadataRecord, RemoteSegment};
        let (_, ids) = diverged("kip405-ids", None);
        let mut metadata = RemoteLogMetadata::default();
        let spans = [
            (0, 9, vec![(0, 0)]),
            (10, 29, vec![(1, 10)]),
            (10, 19, vec![(1, 10)]),
            (20, 39, vec![(2, 20)]),
            (40, 49, vec![(2, 40)]),
        ];
        for (n, (start, end, epochs)) in spans.into_iter().enumerate() {
            let segment = RemoteSegment {
                start_offset: start,
                end_offset: end,
                leader_epochs: epochs.into_iter().collect(),
                state: SegmentState::CopyStarted,
            };
            let id = [n as u8 + 1; 16];
            let record = MetadataRecord::Segment { topic: "t".into(), topic_id: [0; 16], partition: 0, id, segment };
            metadata.apply("m", &encode(&record)).expect("applies");
            // The last upload never finished.
            if n < 4 {
                let done = MetadataRecord::Update {
                    topic: "t".into(),
                    topic_id: [0; 16],
                    partition: 0,
                    id,
                    state: SegmentState::CopyFinished,
                };
                metadata.apply("m", &encode(&done)).expect("applies");
            }
        }
        let (archive, _) = diverged("kip405-metadata", Some(metadata.clone()));
        let (records, notes) = read_all(&archive);
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..40).collect::<Vec<_>>());
        assert!(records.iter().all(|r| !r.value.as_ref().expect("value").starts_with(b"stale")));
        let notes = notes.join("; ");
        assert!(notes.contains("validity: remote log metadata"), "{notes}");
        assert!(
            notes.contains(&format!("dropped upload {} at offset 40: its state is COPY_SEGMENT_STARTED", ids[4])),
            "{notes}"
        );
        assert!(
            notes.contains(&format!("dropped upload {} at offset 10: off the leader-epoch lineage", ids[1])),
            "{notes}"
        );
        // A partition whose remote log is being deleted has no valid upload: listing says so.
        metadata
            .apply(
                "m",
                &encode(&MetadataRecord::PartitionDelete {
                    topic: "t".into(),
                    topic_id: [0; 16],
                    partition: 0,
                    state: 0,
                }),
            )
            .expect("applies");
        let (archive, _) = diverged("kip405-deleted", Some(metadata));
        let error = crate::archive::runtime().block_on(archive.layout.list(&archive, "t", 0)).expect_err("refused");
        assert!(error.to_string().contains("being deleted") && error.to_string().contains("t-AAAA"), "{error}");
    }

    #[test]
    fn a_recreated_topic_is_the_metadatas_current_topic_id_or_refused() {
        use crate::layout::remote_log_metadata::{encode, uuid_string, MetadataRecord, RemoteSegment};
        use object_store::ObjectStoreExt;
        let (archive, _) = diverged("kip405-recreated", None);
        // The same uploads again under the recreated topic's id.
        let new_id = uuid_string(&[1; 16]);
        let old_dir = archive.key("t-AAAAAAAAAAAAAAAAAAAAAA");
        let runtime = crate::archive::runtime();
        for meta in runtime.block_on(archive.list_objects(&old_dir)).expect("lists") {
            let bytes = runtime.block_on(archive.fetch(&meta.location)).expect("fetch");
            let key = Path::from(meta.location.as_ref().replacen("AAAAAAAAAAAAAAAAAAAAAA", &new_id, 1));
            runtime.block_on(archive.store.put(&key, bytes.into())).expect("put");
        }
        assert_eq!(topic_id_of(&format!("t-{new_id}")), Some(new_id.clone()));
        assert_eq!(topic_id_of("t-01010101-0101-0101-0101-010101010101"), Some(new_id.clone()));
        let error = runtime.block_on(archive.layout.partitions(&archive, "t")).expect_err("two topic ids");
        assert!(error.to_string().contains("several topic ids") && error.to_string().contains(&new_id), "{error}");

        // The metadata saw the old topic, its partition deleted, then the new topic: the new one
        // is read, and the old one's delete marker does not touch it.
        let mut metadata = RemoteLogMetadata::default();
        let spans = [(0, 9, (0, 0)), (10, 29, (1, 10)), (10, 19, (1, 10)), (20, 39, (2, 20)), (40, 49, (2, 40))];
        for topic_id in [[0u8; 16], [1u8; 16]] {
            for (n, (start, end, epoch)) in spans.into_iter().enumerate() {
                let segment = RemoteSegment {
                    start_offset: start,
                    end_offset: end,
                    leader_epochs: [epoch].into_iter().collect(),
                    state: SegmentState::CopyFinished,
                };
                let id = [n as u8 + 1; 16];
                let record = MetadataRecord::Segment { topic: "t".into(), topic_id, partition: 0, id, segment };
                metadata.apply("m", &encode(&record)).expect("applies");
            }
            if topic_id == [0; 16] {
                let delete = MetadataRecord::PartitionDelete { topic: "t".into(), topic_id, partition: 0, state: 2 };
                metadata.apply("m", &encode(&delete)).expect("applies");
            }
        }
        let archive = Archive { layout: Arc::new(Kip405Layout { metadata: Some(Arc::new(metadata)) }), ..archive };
        assert_eq!(runtime.block_on(archive.layout.partitions(&archive, "t")).expect("the current id"), vec![0]);
        let segments = runtime.block_on(archive.layout.segments(&archive, "t", 0)).expect("lists the new topic");
        assert!(!segments.is_empty() && segments.iter().all(|s| s.key.as_ref().contains(&new_id)), "{segments:?}");
    }
}
