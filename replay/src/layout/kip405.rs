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
//! offsets.
//!
//! When several uploads share a base offset (a retried upload), the one covering the most offsets
//! is read, ties going to the smallest segment id; `inspect` lists the choice.
//!
//! Caveat: this reader was written from the format's published code and tested on fixtures built
//! here, not yet on an upload by a real broker with the plugin.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use serde::Deserialize;

use super::{ArchiveLayout, SegmentRef, Transform};
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::segment::compression::{decompress, Codec, MAX_DECOMPRESSED};

/// See the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kip405Layout;

/// The parts of `.rsm-manifest` replay needs.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// How the `.log` object is chunked.
    pub chunk_index: ChunkIndexJson,
    /// Whether chunks are zstd-compressed.
    #[serde(default)]
    pub compression: bool,
    /// Encryption metadata, if the segment is encrypted.
    #[serde(default)]
    pub encryption: Option<serde_json::Value>,
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

/// Chunks of a transformed segment: original size and transformed size of each, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunks {
    /// `(original size, transformed size)` per chunk.
    pub sizes: Vec<(u32, u32)>,
    /// Whether each chunk is zstd-compressed.
    pub compressed: bool,
    /// The original file's size.
    pub original_file_size: u32,
}

fn chunk_count(original_file_size: u32, original_chunk_size: u32) -> usize {
    (original_file_size as usize).div_ceil(original_chunk_size.max(1) as usize).max(1)
}

fn original_sizes(original_file_size: u32, original_chunk_size: u32) -> Vec<u32> {
    let n = chunk_count(original_file_size, original_chunk_size);
    (0..n)
        .map(
            |i| if i + 1 < n { original_chunk_size } else { original_file_size - original_chunk_size * (n as u32 - 1) },
        )
        .collect()
}

/// Decodes the `variable` index's size list.
pub fn decode_variable_sizes(encoded: &str) -> std::result::Result<Vec<u32>, String> {
    let packed = base64_decode(encoded)?;
    let raw = decompress(Codec::Zstd, &packed, 1 << 24)?;
    let int_at = |at: usize| -> std::result::Result<u32, String> {
        raw.get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")))
            .ok_or("truncated size list".into())
    };
    let count = int_at(0)? as usize;
    let base = int_at(4)?;
    let width = *raw.get(8).ok_or("truncated size list")? as usize;
    if count == 0 || width > 4 || raw.len() != 9 + (count - 1) * width + 4 {
        return Err(format!("size list of {} bytes does not hold {count} sizes of width {width}", raw.len()));
    }
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count - 1 {
        let bytes = &raw[9 + i * width..9 + (i + 1) * width];
        let delta = bytes.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        sizes.push(base.checked_add(delta).ok_or("size overflows")?);
    }
    sizes.push(int_at(9 + (count - 1) * width)?);
    Ok(sizes)
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

impl Manifest {
    /// The chunk layout, or why this segment cannot be read.
    pub fn chunks(&self) -> std::result::Result<Chunks, String> {
        if self.encryption.as_ref().is_some_and(|e| !e.is_null()) {
            return Err("the segment is encrypted; encrypted KIP-405 segments are not supported".into());
        }
        let (original_file_size, original, transformed) = match &self.chunk_index {
            ChunkIndexJson::Fixed {
                original_chunk_size,
                original_file_size,
                transformed_chunk_size,
                final_transformed_chunk_size,
            } => {
                let original = original_sizes(*original_file_size, *original_chunk_size);
                let mut transformed = vec![*transformed_chunk_size; original.len()];
                *transformed.last_mut().expect("at least one chunk") = *final_transformed_chunk_size;
                (*original_file_size, original, transformed)
            }
            ChunkIndexJson::Variable { original_chunk_size, original_file_size, transformed_chunks } => {
                let original = original_sizes(*original_file_size, *original_chunk_size);
                let transformed = decode_variable_sizes(transformed_chunks)?;
                if transformed.len() != original.len() {
                    return Err(format!("{} transformed chunk sizes for {} chunks", transformed.len(), original.len()));
                }
                (*original_file_size, original, transformed)
            }
        };
        Ok(Chunks {
            sizes: original.into_iter().zip(transformed).collect(),
            compressed: self.compression,
            original_file_size,
        })
    }
}

impl Chunks {
    /// The original segment from the transformed object `bytes`.
    pub fn untransform(&self, object: &str, bytes: &Bytes) -> Result<Bytes> {
        let expected: u64 = self.sizes.iter().map(|(_, t)| u64::from(*t)).sum();
        if expected != bytes.len() as u64 {
            return Err(Error::CorruptBatch {
                object: object.to_string(),
                byte_offset: bytes.len().min(expected as usize) as u64,
                reason: format!("the manifest's chunks add up to {expected} bytes, the object has {}", bytes.len()),
            });
        }
        if !self.compressed {
            return Ok(bytes.clone());
        }
        let mut out = Vec::with_capacity(self.original_file_size as usize);
        let mut at = 0usize;
        for (i, &(original, transformed)) in self.sizes.iter().enumerate() {
            let chunk = &bytes[at..at + transformed as usize];
            let plain =
                decompress(Codec::Zstd, chunk, (original as usize).min(MAX_DECOMPRESSED)).map_err(|reason| {
                    Error::CorruptBatch {
                        object: object.to_string(),
                        byte_offset: at as u64,
                        reason: format!("chunk {i}: {reason}"),
                    }
                })?;
            if plain.len() != original as usize {
                return Err(Error::CorruptBatch {
                    object: object.to_string(),
                    byte_offset: at as u64,
                    reason: format!("chunk {i} inflates to {} bytes, the manifest says {original}", plain.len()),
                });
            }
            out.extend(plain);
            at += transformed as usize;
        }
        Ok(Bytes::from(out))
    }
}

fn base64_decode(text: &str) -> std::result::Result<Vec<u8>, String> {
    // A dozen lines instead of a dependency: only the standard alphabet, with padding, is used here.
    let value = |c: u8| -> std::result::Result<u32, String> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("invalid base64 character {:?}", c as char)),
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
    /// The directory of `topic` (whatever its topic id) under the archive.
    async fn topic_dir(archive: &Archive, topic: &str) -> Result<Option<Path>> {
        let mut dirs: Vec<String> = archive
            .list_dirs(&archive.prefix)
            .await?
            .into_iter()
            .filter(|name| strip_topic_id(name) == Some(topic))
            .collect();
        dirs.sort();
        Ok(dirs.into_iter().next().map(|name| archive.prefix.clone().join(name)))
    }
}

/// `{topic}-{topicId}` → `topic`, for a topic id in any of the usual spellings (22-character
/// base64 or a dashed UUID).
pub(crate) fn strip_topic_id(dir: &str) -> Option<&str> {
    let n = dir.len();
    // Kafka's own spelling: 22 characters of URL-safe base64 (which may contain '-').
    if n > 23 && dir.as_bytes()[n - 23] == b'-' && !dir[n - 22..].bytes().all(|b| b.is_ascii_digit()) {
        return Some(&dir[..n - 23]);
    }
    // A dashed UUID.
    if n > 37 && dir.as_bytes()[n - 37] == b'-' && dir[n - 36..].matches('-').count() == 4 {
        return Some(&dir[..n - 37]);
    }
    None
}

impl ArchiveLayout for Kip405Layout {
    fn name(&self) -> &'static str {
        "kip405"
    }

    fn partitions<'a>(&'a self, archive: &'a Archive, topic: &'a str) -> BoxFuture<'a, Result<Vec<i32>>> {
        async move {
            let Some(dir) = Self::topic_dir(archive, topic).await? else { return Ok(Vec::new()) };
            archive.list_numbered_dirs(&dir).await
        }
        .boxed()
    }

    fn segments<'a>(
        &'a self,
        archive: &'a Archive,
        topic: &'a str,
        partition: i32,
    ) -> BoxFuture<'a, Result<Vec<SegmentRef>>> {
        async move {
            let Some(topic_dir) = Self::topic_dir(archive, topic).await? else { return Ok(Vec::new()) };
            let dir = topic_dir.clone().join(partition.to_string());
            let objects = archive.list_objects(&dir).await?;
            // Per base offset, every upload: (segment id, log object).
            let mut uploads: BTreeMap<i64, Vec<(String, object_store::ObjectMeta)>> = BTreeMap::new();
            for meta in &objects {
                let name = meta.location.filename().unwrap_or_default();
                let Some(stem) = name.strip_suffix(".log") else { continue };
                let Some((base, id)) = stem.split_once('-') else { continue };
                let Ok(base) = base.parse::<i64>() else { continue };
                uploads.entry(base).or_default().push((id.to_string(), meta.clone()));
            }
            let mut chosen = Vec::new();
            for (base, mut candidates) in uploads {
                let mut read = Vec::new();
                for (id, meta) in candidates.drain(..) {
                    let manifest_key = dir.clone().join(format!("{base:020}-{id}.rsm-manifest"));
                    let manifest = archive.fetch(&manifest_key).await?;
                    let manifest: Manifest = serde_json::from_slice(&manifest).map_err(|e| Error::Inconsistent {
                        object: manifest_key.to_string(),
                        reason: format!("not an RSM manifest: {e}"),
                    })?;
                    let chunks = manifest.chunks().map_err(|what| Error::UnsupportedFormat {
                        object: manifest_key.to_string(),
                        byte_offset: 0,
                        what,
                    })?;
                    let bytes = archive.fetch(&meta.location).await?;
                    // A damaged upload still lists (its end then unknown): replay and `verify`
                    // report the damage by object when they read it.
                    let next = match chunks.untransform(meta.location.as_ref(), &bytes) {
                        Ok(plain) => last_offset(meta.location.as_ref(), &plain).ok().flatten().map(|l| l + 1),
                        Err(_) => None,
                    };
                    read.push((next, id, meta, Arc::new(chunks)));
                }
                // Most offsets first, then the smallest segment id.
                read.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                let others = read.len() - 1;
                let (next, id, meta, chunks) = read.into_iter().next().expect("at least one upload");
                let next = next.unwrap_or(base + 1);
                let note = (others > 0).then(|| format!("offset {base}: {} uploads, reading segment {id}", others + 1));
                chosen.push((base, next, meta, chunks, note));
            }
            let mut out = Vec::with_capacity(chosen.len());
            for (i, (base, next, meta, chunks, note)) in chosen.iter().enumerate() {
                if let Some((following, ..)) = chosen.get(i + 1) {
                    if next > following {
                        return Err(Error::Inconsistent {
                            object: meta.location.to_string(),
                            reason: format!(
                                "holds offsets up to {}, past the next segment's base {following}",
                                next - 1
                            ),
                        });
                    }
                }
                out.push(SegmentRef {
                    key: meta.location.clone(),
                    base_offset: *base,
                    next_offset: *next,
                    size: meta.size,
                    relative_offsets: false,
                    aborted: Default::default(),
                    transform: Transform::Chunked(chunks.clone()),
                    note: note.clone(),
                });
            }
            Ok(out)
        }
        .boxed()
    }
}

/// The last offset of the batches in an untransformed segment.
fn last_offset(object: &str, plain: &Bytes) -> Result<Option<i64>> {
    let mut records = Vec::new();
    let summary = crate::segment::decode_segment(object, plain, i64::MIN, &mut records)?;
    Ok(summary.offsets.map(|(_, last)| last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::conformance::{check_layout, history};
    use crate::segment::{control_record, encode_batch_full, encode_batch_with, BatchOptions, Codec};
    use object_store::ObjectStoreExt;

    #[test]
    fn variable_size_lists_decode_like_the_published_example() {
        // The format's own test vector: sizes 10, 20, 30.
        assert_eq!(decode_variable_sizes("KLUv/SAPeQAAAAAAAwAAAAoBAAoAAAAe").expect("decodes"), vec![10, 20, 30]);
        let sizes = vec![7, 300, 12, 90_000, 5];
        assert_eq!(decode_variable_sizes(&encode_variable_sizes(&sizes)).expect("round trips"), sizes);
    }

    /// Writes `history()` as an Aiven RSM upload: zstd chunks of 200 bytes, variable index; and for
    /// partition 2, a second, shorter upload of its first segment.
    fn write_kip405(archive: &Archive) -> Path {
        let mut victim = None;
        for (p, records) in history() {
            let last_chunk = (records.len() - 1) / 16;
            for (n, chunk) in records.chunks(16).enumerate() {
                let mut plain = Vec::new();
                // Partition 0 ends with a committed transaction: its batches and the commit marker.
                let txn = p == 0 && n == last_chunk;
                let codec = if n % 2 == 0 { Codec::Lz4 } else { Codec::None };
                let options =
                    BatchOptions { codec, producer_id: if txn { 9 } else { -1 }, transactional: txn, control: false };
                for batch in chunk.chunks(5) {
                    encode_batch_full(batch, &options, &mut plain);
                }
                if txn {
                    let marker = control_record(chunk[chunk.len() - 1].offset + 1, 0, true);
                    encode_batch_full(&[marker], &BatchOptions { control: true, ..options }, &mut plain);
                }
                let base = chunk[0].offset;
                let dir = format!("t-AAAAAAAAAAAAAAAAAAAAAA/{p}");
                let mut uploads = vec![("5f1d", plain.clone())];
                if p == 2 && n == 0 {
                    let mut shorter = Vec::new();
                    encode_batch_with(&chunk[..5], Codec::None, &mut shorter);
                    uploads.push(("0a0a", shorter));
                }
                for (id, plain) in uploads {
                    let original_chunk = 200usize;
                    let mut transformed = Vec::new();
                    let mut sizes = Vec::new();
                    for c in plain.chunks(original_chunk) {
                        let z = crate::segment::compression::compress(Codec::Zstd, c);
                        sizes.push(z.len() as u32);
                        transformed.extend(z);
                    }
                    let manifest = serde_json::json!({
                        "version": "1",
                        "chunkIndex": {"type": "variable", "originalChunkSize": original_chunk,
                                       "originalFileSize": plain.len(), "transformedChunks": encode_variable_sizes(&sizes)},
                        "segmentIndexes": {},
                        "compression": true,
                    });
                    let log = archive.key(&format!("{dir}/{base:020}-{id}.log"));
                    let rt = crate::archive::runtime();
                    rt.block_on(archive.store.put(&log, transformed.into())).expect("put");
                    let m = archive.key(&format!("{dir}/{base:020}-{id}.rsm-manifest"));
                    rt.block_on(archive.store.put(&m, serde_json::to_vec(&manifest).expect("json").into()))
                        .expect("put");
                    if p == 1 && n == 1 {
                        victim.get_or_insert(log);
                    }
                }
            }
        }
        victim.expect("written")
    }

    #[test]
    fn kip405_layout_conforms_and_picks_one_of_several_uploads() {
        let archive = Archive::open("memory://conformance-kip405").expect("opens");
        let archive = Archive { layout: Arc::new(Kip405Layout), ..archive };
        let victim = write_kip405(&archive);
        let segments = crate::archive::runtime().block_on(Kip405Layout.segments(&archive, "t", 2)).expect("lists");
        assert!(segments[0].note.as_deref().is_some_and(|n| n.contains("2 uploads, reading segment 5f1d")));
        let detected = Archive::open_layout("memory://conformance-kip405", None, None).expect("opens");
        assert_eq!(detected.layout.name(), "kip405");
        let summary = crate::inspect::summarize(&archive, "t").expect("summarizes");
        assert_eq!(summary.partitions[&0].control_batches, 1, "the commit marker is skipped");
        assert!(summary.transactions_note().expect("has a transaction").contains("does not record"));
        check_layout(&archive, "t", &history(), &victim);
    }

    #[test]
    fn encrypted_segments_are_refused_clearly() {
        let manifest: Manifest = serde_json::from_value(serde_json::json!({
            "chunkIndex": {"type": "fixed", "originalChunkSize": 100, "originalFileSize": 250,
                           "transformedChunkSize": 110, "finalTransformedChunkSize": 30},
            "compression": false, "encryption": {"dataKey": "x"}
        }))
        .expect("parses");
        assert!(manifest.chunks().expect_err("refused").contains("encrypted"));
        let plain: Manifest = serde_json::from_value(serde_json::json!({
            "chunkIndex": {"type": "fixed", "originalChunkSize": 100, "originalFileSize": 250,
                           "transformedChunkSize": 110, "finalTransformedChunkSize": 30},
            "compression": false
        }))
        .expect("parses");
        assert_eq!(plain.chunks().expect("readable").sizes, vec![(100, 110), (100, 110), (50, 30)]);
    }
}
