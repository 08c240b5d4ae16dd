//! Redpanda tiered storage, as Redpanda before v24.2 writes it to a bucket:
//!
//! ```text
//! {Hp:08x}/meta/kafka/{topic}/{p}_{rev}/manifest.json        the partition manifest (JSON)
//! {Hp:08x}/meta/kafka/{topic}/{p}_{rev}/manifest.json.{…}    spillover manifests (older segments)
//! {Ht:08x}/meta/kafka/{topic}/topic_manifest.json            the topic manifest (not needed here)
//! {Hs:08x}/kafka/{topic}/{p}_{rev}/{name}.{archiver_term}    a segment
//! {Hs:08x}/kafka/{topic}/{p}_{rev}/{name}.{archiver_term}.tx its aborted transactions (JSON)
//! ```
//!
//! `Hp` is xxhash32 of `kafka/{topic}/{p}_{rev}` masked to its top four bits, so a partition
//! manifest lies under one of 16 prefixes `00000000`…`f0000000`: listing those finds every
//! partition without knowing its revision. `Hs` is the full xxhash32 of the segment's path without
//! the term suffix. A segment's name is computed from its manifest entry: `{base}-{term}-v1.log`
//! (`sname_format` 1) or `{base}-{committed}-{size}-{term}-v1.log` (2 and 3).
//!
//! **Only segments listed in the partition manifest are valid**, so the manifest is the listing:
//! an object the manifest lists but the bucket lacks is a hole ([`Error::ArchiveHole`]), and a
//! segment's bytes must fill exactly the raft offsets its entry gives (`base_offset` to
//! `committed_offset`) with exactly `size_bytes` bytes, except a compacted segment
//! (`is_compacted`), whose raft offsets may have gaps and end early (its `.tx`, if any, is still
//! applied: harmless where compaction already removed the aborted records). A segment whose entry
//! gives an `ntp_revision` lies under that revision's `{p}_{rev}`, which may be older than the
//! manifest's. Spillover manifests (the entries of the
//! top-level `spillover` list) hold the older segments; entries below `archive_start_offset`
//! (spillover) or `start_offset` (the manifest's own) were removed by retention and are skipped.
//!
//! A segment's batches carry a 61-byte little-endian header (see [`RedpandaSegment`]) and raft
//! offsets, which count batches Kafka never sees (raft configuration and other internal
//! batches). Replay translates: it checks both CRCs, drops internal batches, and writes each data
//! batch back as the Kafka v2 batch it was (same CRC), at Kafka offset `raft − delta`, where
//! `delta` starts at the entry's `delta_offset` and grows by the offsets of every translated
//! internal batch. A segment's next Kafka offset is `committed_offset + 1 − delta_offset_end`.
//! Aborted transactions come from the `.tx` side file (raft offset ranges per producer id and
//! epoch); translating turns them into Kafka offsets, batch by batch, and the decoder skips
//! those batches (and counts them), so this layout carries aborts.
//!
//! Not read: Redpanda's binary manifests (`manifest.bin`, the default since v23.2, and every
//! manifest of v24.2's `{cluster_uuid}/…` keys) are refused with an error naming the object;
//! namespaces other than `kafka`. A manifest's `start_kafka_offset` override (DeleteRecords) is
//! not applied: records below it are replayed.
//!
//! Caveat: written from the format's public description and tested on fixtures this module
//! writes ([`write_fixture`]), not yet on a bucket written by a real Redpanda.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use kappa_engine::Offset;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::{ArchiveLayout, Hole, Listing, SegmentRef, Transform};
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::segment::AbortedTxn;

/// Largest manifest (or `.tx` file) read: a partition manifest lists at most a few thousand
/// segments before Redpanda spills them over; anything much larger is not a manifest.
const MAX_MANIFEST: u64 = 16 << 20;
/// Segments (and side files) looked up at once while listing.
const CONCURRENT_LOOKUPS: usize = 16;
/// Length of a Redpanda batch header, and of a Kafka v2 one.
pub const HEADER_LEN: usize = 61;
/// Batch type of data (what Kafka clients produce and fetch).
const DATA: i8 = 1;
/// Batch types that take raft offsets but no Kafka offsets: raft configuration (2) and the
/// internal types the offset translator counts.
const TRANSLATED: [i8; 6] = [2, 19, 23, 25, 34, 38];
/// The only namespace whose topics are Kafka topics.
const NAMESPACE: &str = "kafka";

/// See the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedpandaLayout;

fn xxh32(text: &str) -> u32 {
    xxhash_rust::xxh32::xxh32(text.as_bytes(), 0)
}

/// The key (relative to the archive) of the JSON partition manifest of `topic`'s partition
/// `partition` at topic revision `revision`.
pub fn partition_manifest_key(topic: &str, partition: i32, revision: i64) -> String {
    let path = format!("{NAMESPACE}/{topic}/{partition}_{revision}");
    format!("{:08x}/meta/{path}/manifest.json", xxh32(&path) & 0xF000_0000)
}

/// The key (relative to the archive) of the topic manifest of `topic`.
pub fn topic_manifest_key(topic: &str) -> String {
    let path = format!("{NAMESPACE}/{topic}");
    format!("{:08x}/meta/{path}/topic_manifest.json", xxh32(&path) & 0xF000_0000)
}

/// The key (relative to the archive) of a segment named `name` (see [`SegmentMeta::name`]).
pub fn segment_key(topic: &str, partition: i32, revision: i64, name: &str, archiver_term: Option<i64>) -> String {
    let path = format!("{NAMESPACE}/{topic}/{partition}_{revision}/{name}");
    let hash = xxh32(&path);
    match archiver_term {
        Some(term) => format!("{hash:08x}/{path}.{term}"),
        None => format!("{hash:08x}/{path}"),
    }
}

/// A partition manifest (or a spillover manifest), as JSON.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PartitionManifest {
    /// Format version.
    #[serde(default)]
    pub version: Option<i64>,
    /// Namespace (`kafka`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Topic.
    #[serde(default)]
    pub topic: Option<String>,
    /// Partition.
    #[serde(default)]
    pub partition: Option<i64>,
    /// Topic revision.
    #[serde(default)]
    pub revision: Option<i64>,
    /// Last raft offset uploaded.
    #[serde(default)]
    pub last_offset: Option<i64>,
    /// First raft offset still valid among this manifest's segments (retention moves it).
    #[serde(default)]
    pub start_offset: Option<i64>,
    /// First raft offset still valid among the spilled-over segments.
    #[serde(default)]
    pub archive_start_offset: Option<i64>,
    /// The segments, by name (Redpanda writes a map; a list is read too).
    #[serde(default)]
    pub segments: Segments,
    /// Segments replaced by a reupload, awaiting deletion: not valid.
    #[serde(default)]
    pub replaced: Option<serde_json::Value>,
    /// The spillover manifests, oldest first: each entry describes one spillover manifest as a
    /// segment entry would (its offset range, deltas and timestamps).
    #[serde(default)]
    pub spillover: Vec<SegmentMeta>,
}

/// A manifest's segment entries: Redpanda writes them as a map from segment name to entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Segments {
    /// `{"0-1-v1.log": {...}, ...}`.
    Map(BTreeMap<String, SegmentMeta>),
    /// `[{...}, ...]`.
    List(Vec<SegmentMeta>),
    /// None listed.
    #[default]
    None,
}

/// One segment entry of a partition manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct SegmentMeta {
    /// First raft offset.
    pub base_offset: i64,
    /// Last raft offset (inclusive).
    pub committed_offset: i64,
    /// Raft offsets without a Kafka offset before `base_offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_offset: Option<i64>,
    /// Raft offsets without a Kafka offset up to and including `committed_offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_offset_end: Option<i64>,
    /// The raft term of the segment's first batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_term: Option<i64>,
    /// The term of the archiver that uploaded it (the key's suffix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archiver_term: Option<i64>,
    /// How the segment's name is spelled (1: `{base}-{term}-v1.log`; 2, 3: with committed and size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sname_format: Option<i64>,
    /// The object's size.
    #[serde(default)]
    pub size_bytes: i64,
    /// Whether compaction rewrote it (its raft offsets may then have gaps).
    #[serde(default)]
    pub is_compacted: bool,
    /// First record timestamp (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_timestamp: Option<i64>,
    /// Largest record timestamp (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_timestamp: Option<i64>,
    /// The topic revision in the segment's key, when not the manifest's (a segment uploaded
    /// before the partition moved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntp_revision: Option<i64>,
}

impl SegmentMeta {
    /// The segment's name in its key; `listed_as` is its map key in the manifest, read for the
    /// term when the entry has no `segment_term`.
    pub fn name(&self, listed_as: Option<&str>) -> String {
        let term = self
            .segment_term
            .or_else(|| listed_as.and_then(|n| n.split('-').nth(1)).and_then(|t| t.parse().ok()))
            .unwrap_or(0);
        match self.sname_format {
            Some(2) | Some(3) => {
                format!("{}-{}-{}-{term}-v1.log", self.base_offset, self.committed_offset, self.size_bytes)
            }
            _ => format!("{}-{term}-v1.log", self.base_offset),
        }
    }
}

impl PartitionManifest {
    /// Parses a JSON manifest; errors name `object` and the byte where the JSON fails.
    pub fn parse(object: &str, bytes: &[u8]) -> Result<PartitionManifest> {
        serde_json::from_slice(bytes).map_err(|e| Error::CorruptMetadata {
            object: object.to_string(),
            byte_offset: json_error_offset(bytes, &e),
            reason: format!("not a Redpanda partition manifest: {e}"),
        })
    }

    /// The segment entries with their map keys, in raft offset order.
    pub fn entries(&self) -> Vec<(Option<String>, SegmentMeta)> {
        let mut out: Vec<(Option<String>, SegmentMeta)> = match &self.segments {
            Segments::Map(map) => map.iter().map(|(k, v)| (Some(k.clone()), v.clone())).collect(),
            Segments::List(list) => list.iter().map(|v| (None, v.clone())).collect(),
            Segments::None => Vec::new(),
        };
        out.sort_by_key(|(_, m)| m.base_offset);
        out
    }
}

/// Byte offset of a serde_json error's line and column in `bytes`.
fn json_error_offset(bytes: &[u8], error: &serde_json::Error) -> u64 {
    let line_start: usize =
        bytes.split(|&b| b == b'\n').take(error.line().saturating_sub(1)).map(|l| l.len() + 1).sum();
    (line_start + error.column().saturating_sub(1)).min(bytes.len()) as u64
}

/// The `.tx` side file: the segment's aborted transactions.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct TxFile {
    /// Format version.
    #[serde(default)]
    pub version: i64,
    /// Oldest version that can read it.
    #[serde(default)]
    pub compat_version: i64,
    /// The aborted ranges.
    #[serde(default)]
    pub ranges: Vec<TxRange>,
}

/// A producer's aborted transaction, in raft offsets (inclusive).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct TxRange {
    /// The producer.
    pub pid: ProducerIdentity,
    /// First raft offset of the transaction.
    pub first: i64,
    /// Last raft offset (its abort marker).
    pub last: i64,
}

/// A producer id and epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ProducerIdentity {
    /// Producer id.
    pub id: i64,
    /// Producer epoch.
    pub epoch: i16,
}

impl TxFile {
    /// Parses a `.tx` file; errors name `object`.
    pub fn parse(object: &str, bytes: &[u8]) -> Result<TxFile> {
        serde_json::from_slice(bytes).map_err(|e| Error::CorruptMetadata {
            object: object.to_string(),
            byte_offset: json_error_offset(bytes, &e),
            reason: format!("not a Redpanda transaction manifest: {e}"),
        })
    }
}

/// How one Redpanda segment's bytes become Kafka batches: the [`Transform`] of this layout.
///
/// Each batch starts with a 61-byte little-endian header: `header_crc` u32 (CRC32C of the 57
/// header bytes after it), `size_bytes` i32 (header included), `base_offset` i64 (raft), `type`
/// i8, `crc` u32 (Kafka's batch CRC), `attrs` i16, `last_offset_delta` i32, `first_ts` i64,
/// `max_ts` i64, `producer_id` i64, `producer_epoch` i16, `base_sequence` i32, `record_count`
/// i32; then the records as in Kafka v2. A header of zeros ends the segment (padding).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedpandaSegment {
    /// The object's size, as the manifest gives it.
    pub size_bytes: u64,
    /// First raft offset.
    pub base_offset: i64,
    /// Last raft offset (inclusive).
    pub committed_offset: i64,
    /// Translated offsets before the segment.
    pub delta_offset: i64,
    /// Translated offsets up to its end, where the manifest says.
    pub delta_offset_end: Option<i64>,
    /// Compacted: raft offsets may have gaps between batches.
    pub compacted: bool,
    /// Aborted transactions (from the `.tx` file).
    pub aborted: Vec<TxRange>,
}

/// What translating a segment gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Translated {
    /// The data batches, as Kafka v2 batches with Kafka offsets.
    pub batches: Bytes,
    /// `delta` after the last batch.
    pub delta_end: i64,
    /// The aborted data batches among `batches`, in Kafka offsets (one entry per batch), for the
    /// decoder to skip and count.
    pub aborted: Vec<AbortedTxn>,
    /// Internal batches dropped (raft configuration and the like).
    pub internal_batches: usize,
}

fn le_i16(b: &[u8], at: usize) -> i16 {
    i16::from_le_bytes([b[at], b[at + 1]])
}
fn le_i32(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn le_i64(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// The 40 big-endian bytes of a Kafka v2 header from `attributes` on, from the little-endian
/// Redpanda header `h` (whose fields from byte 21 on lie where Kafka's do).
fn kafka_tail(h: &[u8]) -> [u8; 40] {
    let mut out = [0u8; 40];
    swap_tail(&h[21..HEADER_LEN], &mut out);
    out
}

/// Copies the header fields from `attributes` on (`src`, 40 bytes) into `dst`, each field's bytes
/// reversed: little-endian to big-endian and back.
fn swap_tail(src: &[u8], dst: &mut [u8]) {
    // Widths of attrs, last_offset_delta, first_ts, max_ts, producer_id, epoch, sequence, count.
    let mut at = 0;
    for width in [2usize, 4, 8, 8, 8, 2, 4, 4] {
        dst[at..at + width].copy_from_slice(&src[at..at + width]);
        dst[at..at + width].reverse();
        at += width;
    }
}

impl RedpandaSegment {
    /// Translates the segment `bytes` of object `object` into Kafka batches (see the module
    /// documentation), checking every header's and batch's CRC, the raft offsets against the
    /// manifest's entry, and the translated count against `delta_offset_end`. Errors name the
    /// object and the byte offset in it.
    pub fn translate(&self, object: &str, bytes: &[u8]) -> Result<Translated> {
        let corrupt = |at: usize, reason: String| Error::CorruptBatch {
            object: object.to_string(),
            byte_offset: at as u64,
            reason,
        };
        if bytes.len() as u64 != self.size_bytes {
            return Err(corrupt(
                bytes.len().min(self.size_bytes as usize),
                format!("the object has {} bytes, the partition manifest says {}", bytes.len(), self.size_bytes),
            ));
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut done = Translated { delta_end: self.delta_offset, ..Translated::default() };
        let mut delta = self.delta_offset;
        let mut expected = self.base_offset;
        let mut pos = 0usize;
        while pos < bytes.len() {
            let rest = &bytes[pos..];
            if rest.len() < HEADER_LEN || rest[..HEADER_LEN].iter().all(|&b| b == 0) {
                // Padding ends a segment; anything else left is a truncated header.
                if let Some(i) = rest.iter().position(|&b| b != 0) {
                    return Err(corrupt(
                        pos + i,
                        format!("{} bytes after the last batch are neither a batch nor padding", rest.len()),
                    ));
                }
                break;
            }
            let h = &rest[..HEADER_LEN];
            let header_crc = le_i32(h, 0) as u32;
            let computed = crc32c::crc32c(&h[4..]);
            if header_crc != computed {
                return Err(corrupt(pos, format!("header CRC {header_crc:#010x}, computed {computed:#010x}")));
            }
            let size = le_i32(h, 4);
            let Some(size) = usize::try_from(size).ok().filter(|s| (HEADER_LEN..=rest.len()).contains(s)) else {
                return Err(corrupt(pos + 4, format!("batch of {size} bytes, {} left in the object", rest.len())));
            };
            let raft = le_i64(h, 8);
            let kind = h[16] as i8;
            let crc = le_i32(h, 17) as u32;
            let attrs = le_i16(h, 21);
            let last_delta = le_i32(h, 23);
            let producer_id = le_i64(h, 43);
            let producer_epoch = le_i16(h, 51);
            let tail = kafka_tail(h);
            let body = &rest[HEADER_LEN..size];
            let computed = crc32c::crc32c_append(crc32c::crc32c(&tail), body);
            if crc != computed {
                return Err(corrupt(pos + 17, format!("batch CRC {crc:#010x}, computed {computed:#010x}")));
            }
            let last = u32::try_from(last_delta).ok().and_then(|d| raft.checked_add(i64::from(d)));
            let Some(last) = last.filter(|&l| raft >= 0 && l <= self.committed_offset) else {
                return Err(corrupt(
                    pos + 8,
                    format!(
                        "batch at raft offsets {raft}+{last_delta} outside the segment's {}..={}",
                        self.base_offset, self.committed_offset
                    ),
                ));
            };
            if raft < expected || (!self.compacted && raft != expected) {
                return Err(corrupt(pos + 8, format!("batch at raft offset {raft}, expected {expected}")));
            }
            expected =
                last.checked_add(1).ok_or_else(|| corrupt(pos + 8, format!("batch ends at raft offset {last}")))?;
            if kind == DATA {
                let transactional = attrs & 0x10 != 0;
                let control = attrs & 0x20 != 0;
                let aborted = transactional
                    && !control
                    && self.aborted.iter().any(|r| {
                        r.pid.id == producer_id && r.pid.epoch == producer_epoch && r.first <= raft && raft <= r.last
                    });
                let kafka = raft.checked_sub(delta).filter(|&k| k >= 0).ok_or_else(|| {
                    corrupt(pos + 8, format!("raft offset {raft} less the {delta} translated offsets is negative"))
                })?;
                if aborted {
                    let last = kafka.checked_add(i64::from(last_delta)).ok_or_else(|| {
                        corrupt(pos + 23, format!("batch at Kafka offset {kafka} runs past the largest offset"))
                    })?;
                    done.aborted.push(AbortedTxn { producer_id, first: kafka, last });
                }
                out.extend_from_slice(&kafka.to_be_bytes());
                out.extend_from_slice(&((size - 12) as i32).to_be_bytes());
                out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch: unknown
                out.push(2); // magic
                out.extend_from_slice(&crc.to_be_bytes());
                out.extend_from_slice(&tail);
                out.extend_from_slice(body);
            } else {
                if TRANSLATED.contains(&kind) {
                    delta = delta
                        .checked_add(i64::from(last_delta) + 1)
                        .ok_or_else(|| corrupt(pos + 23, format!("translated offsets overflow after {delta}")))?;
                }
                done.internal_batches += 1;
            }
            pos += size;
        }
        if !self.compacted && i128::from(expected) != i128::from(self.committed_offset) + 1 {
            return Err(Error::Inconsistent {
                object: object.to_string(),
                reason: format!(
                    "its batches end at raft offset {}, the partition manifest says {}",
                    i128::from(expected) - 1,
                    self.committed_offset
                ),
            });
        }
        if let Some(end) = self.delta_offset_end {
            if end != delta {
                return Err(Error::Inconsistent {
                    object: object.to_string(),
                    reason: format!(
                        "{} raft offsets without a Kafka offset up to its end, the partition manifest says {end}",
                        delta
                    ),
                });
            }
        }
        done.delta_end = delta;
        done.batches = Bytes::from(out);
        Ok(done)
    }
}

/// A directory `{p}_{rev}` → `(p, rev)`.
fn partition_revision(dir: &str) -> Option<(i32, i64)> {
    let (p, rev) = dir.split_once('_')?;
    Some((p.parse().ok()?, rev.parse().ok()?))
}

fn is_hash_prefix(name: &str) -> bool {
    name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn is_uuid(name: &str) -> bool {
    name.len() == 36
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| if [8, 13, 18, 23].contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() })
}

/// Whether an archive's top-level names are Redpanda's: hash prefixes, or v24.2's `meta` beside
/// cluster UUIDs.
pub(crate) fn looks_like(tops: &[&str]) -> bool {
    tops.iter().any(|t| is_hash_prefix(t)) || (tops.contains(&"meta") && tops.iter().any(|t| is_uuid(t)))
}

impl RedpandaLayout {
    /// Every `(partition, revision)` of `topic` with a manifest directory.
    async fn revisions(archive: &Archive, topic: &str) -> Result<Vec<(i32, i64)>> {
        let lookups = (0..16u32).map(|h| {
            let dir = archive.key(&format!("{:08x}/meta/{NAMESPACE}/{topic}", h << 28));
            async move { archive.list_dirs(&dir).await }
        });
        let found: Vec<Vec<String>> = futures::stream::iter(lookups).buffered(CONCURRENT_LOOKUPS).try_collect().await?;
        let mut out: Vec<(i32, i64)> = found.iter().flatten().filter_map(|d| partition_revision(d)).collect();
        out.sort();
        out.dedup();
        if out.is_empty() {
            // v24.2's keys: `{cluster_uuid}/meta/kafka/{topic}/…`, binary manifests only.
            for top in archive.list_dirs(&archive.prefix).await? {
                if !is_uuid(&top) {
                    continue;
                }
                let dir = archive.key(&format!("{top}/meta/{NAMESPACE}/{topic}"));
                if !archive.list_dirs(&dir).await?.is_empty() {
                    return Err(Error::UnsupportedFormat {
                        object: dir.to_string(),
                        byte_offset: 0,
                        what: "Redpanda v24.2+ keys (under a cluster UUID) with binary manifests: this build reads \
                               the JSON manifests of earlier versions only"
                            .into(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Reads a JSON manifest at `key`, bounded in size.
    async fn manifest(archive: &Archive, meta: &ObjectMeta) -> Result<PartitionManifest> {
        if meta.size > MAX_MANIFEST {
            return Err(Error::CorruptMetadata {
                object: meta.location.to_string(),
                byte_offset: 0,
                reason: format!("{} bytes, more than the {MAX_MANIFEST} any manifest needs", meta.size),
            });
        }
        let bytes = archive.fetch(&meta.location).await?;
        PartitionManifest::parse(meta.location.as_ref(), &bytes)
    }
}

/// A manifest entry, ready to look up.
struct Entry {
    meta: SegmentMeta,
    listed_as: Option<String>,
    /// The manifest that lists it.
    manifest: String,
}

/// What the bucket holds of one entry.
struct Found {
    segment: Option<ObjectMeta>,
    tx: Option<TxFile>,
}

async fn look_up(archive: &Archive, key: Path) -> Result<Found> {
    // One listing of the segment's own hash directory finds it and its side files.
    let Some(dir) = key.as_ref().rsplit_once('/').map(|(d, _)| Path::from(d)) else {
        return Ok(Found { segment: None, tx: None });
    };
    let objects = archive.list_objects(&dir).await?;
    let segment = objects.iter().find(|m| m.location == key).cloned();
    let tx_key = format!("{key}.tx");
    let tx = match objects.iter().find(|m| m.location.as_ref() == tx_key) {
        None => None,
        Some(meta) if meta.size > MAX_MANIFEST => {
            return Err(Error::CorruptMetadata {
                object: tx_key,
                byte_offset: 0,
                reason: format!("{} bytes, more than the {MAX_MANIFEST} any transaction manifest needs", meta.size),
            })
        }
        Some(meta) => Some(TxFile::parse(&tx_key, &archive.fetch(&meta.location).await?)?),
    };
    Ok(Found { segment, tx })
}

fn checked(object: &str, what: &str, value: Option<i64>) -> Result<i64> {
    value.ok_or_else(|| Error::CorruptMetadata {
        object: object.to_string(),
        byte_offset: 0,
        reason: format!("{what} overflows"),
    })
}

impl ArchiveLayout for RedpandaLayout {
    fn name(&self) -> &'static str {
        "redpanda"
    }

    fn carries_aborts(&self) -> bool {
        true
    }

    fn partitions<'a>(&'a self, archive: &'a Archive, topic: &'a str) -> BoxFuture<'a, Result<Vec<i32>>> {
        async move {
            let mut out: Vec<i32> = Self::revisions(archive, topic).await?.into_iter().map(|(p, _)| p).collect();
            out.dedup();
            Ok(out)
        }
        .boxed()
    }

    fn list<'a>(&'a self, archive: &'a Archive, topic: &'a str, partition: i32) -> BoxFuture<'a, Result<Listing>> {
        async move {
            let revisions: Vec<i64> = Self::revisions(archive, topic)
                .await?
                .into_iter()
                .filter(|(p, _)| *p == partition)
                .map(|(_, r)| r)
                .collect();
            // The newest revision is the topic as it is now; older ones are a deleted topic's.
            let Some(&revision) = revisions.last() else { return Ok(Listing::default()) };
            let mut note = (revisions.len() > 1).then(|| {
                format!("partition {partition}: revisions {revisions:?} found; reading revision {revision}, the newest")
            });
            let manifest_key = archive.key(&partition_manifest_key(topic, partition, revision));
            let dir = Path::from(manifest_key.as_ref().rsplit_once('/').map_or("", |(d, _)| d));
            let objects = archive.list_objects(&dir).await?;
            let by_name = |name: &str| objects.iter().find(|m| m.location.filename() == Some(name));
            let json = by_name("manifest.json");
            let binary = by_name("manifest.bin");
            let json = match (json, binary) {
                (Some(json), Some(bin)) if bin.last_modified <= json.last_modified => json,
                (Some(json), None) => json,
                (_, Some(bin)) => {
                    return Err(Error::UnsupportedFormat {
                        object: bin.location.to_string(),
                        byte_offset: 0,
                        what: "Redpanda's binary partition manifest (the default since v23.2; no newer manifest.json \
                               beside it): this build reads JSON manifests only; store the manifest as JSON beside it \
                               as manifest.json (Redpanda's Admin API serves it as JSON)"
                            .into(),
                    })
                }
                (None, None) => return Ok(Listing::default()),
            };
            let top = Self::manifest(archive, json).await?;
            let top_key = json.location.to_string();

            // The spilled-over segments first (oldest), then the manifest's own.
            let mut entries: Vec<Entry> = Vec::new();
            let mut holes = Vec::new();
            let archive_start = top.archive_start_offset.unwrap_or(i64::MIN);
            for spill in &top.spillover {
                let prefix = format!("manifest.json.{}.{}.", spill.base_offset, spill.committed_offset);
                let found = objects.iter().find(|m| m.location.filename().is_some_and(|n| n.starts_with(&prefix)));
                let binary = format!("manifest.bin.{}.{}.", spill.base_offset, spill.committed_offset);
                let Some(found) = found else {
                    if let Some(bin) =
                        objects.iter().find(|m| m.location.filename().is_some_and(|n| n.starts_with(&binary)))
                    {
                        return Err(Error::UnsupportedFormat {
                            object: bin.location.to_string(),
                            byte_offset: 0,
                            what: "a binary spillover manifest: this build reads JSON manifests only".into(),
                        });
                    }
                    if spill.committed_offset < archive_start {
                        continue;
                    }
                    // Its segments are in no listing: the offsets it covers are a hole.
                    let base = checked(
                        &top_key,
                        "spillover base",
                        spill.base_offset.checked_sub(spill.delta_offset.unwrap_or(0)),
                    )?;
                    let next = checked(
                        &top_key,
                        "spillover end",
                        spill
                            .committed_offset
                            .checked_add(1)
                            .and_then(|n| n.checked_sub(spill.delta_offset_end.unwrap_or(0))),
                    )?;
                    holes.push(Hole {
                        topic: topic.to_string(),
                        partition,
                        expected_offset: base,
                        found_offset: next,
                        object: format!("{dir}/{prefix}…"),
                    });
                    continue;
                };
                let spilled = Self::manifest(archive, found).await?;
                let listed = spilled.entries();
                let (lo, hi) =
                    (listed.first().map(|(_, m)| m.base_offset), listed.last().map(|(_, m)| m.committed_offset));
                if (lo, hi) != (Some(spill.base_offset), Some(spill.committed_offset)) {
                    return Err(Error::Inconsistent {
                        object: found.location.to_string(),
                        reason: format!(
                            "lists raft offsets {lo:?}..={hi:?}, the partition manifest says {}..={}",
                            spill.base_offset, spill.committed_offset
                        ),
                    });
                }
                entries.extend(
                    listed
                        .into_iter()
                        .filter(|(_, m)| m.committed_offset >= archive_start)
                        .map(|(listed_as, meta)| Entry { meta, listed_as, manifest: found.location.to_string() }),
                );
            }
            let start = top.start_offset.unwrap_or(i64::MIN);
            entries.extend(
                top.entries().into_iter().filter(|(_, m)| m.committed_offset >= start).map(|(listed_as, meta)| Entry {
                    meta,
                    listed_as,
                    manifest: top_key.clone(),
                }),
            );

            let keys: Vec<Path> = entries
                .iter()
                .map(|e| {
                    let name = e.meta.name(e.listed_as.as_deref());
                    let rev = e.meta.ntp_revision.unwrap_or(revision);
                    archive.key(&segment_key(topic, partition, rev, &name, e.meta.archiver_term))
                })
                .collect();
            let found: Vec<Found> = futures::stream::iter(keys.iter().cloned().map(|k| look_up(archive, k)))
                .buffered(CONCURRENT_LOOKUPS)
                .try_collect()
                .await?;

            // Kafka offsets of every entry, checked against its neighbours.
            let mut ranges = Vec::with_capacity(entries.len());
            for (i, e) in entries.iter().enumerate() {
                let m = &e.meta;
                let base = checked(
                    &e.manifest,
                    "a segment's Kafka base offset",
                    m.base_offset.checked_sub(m.delta_offset.unwrap_or(0)),
                )?;
                let next = match (m.delta_offset_end, entries.get(i + 1)) {
                    (Some(end), _) => Some(checked(
                        &e.manifest,
                        "a segment's next Kafka offset",
                        m.committed_offset.checked_add(1).and_then(|n| n.checked_sub(end)),
                    )?),
                    (None, Some(following)) => Some(checked(
                        &e.manifest,
                        "a segment's next Kafka offset",
                        following.meta.base_offset.checked_sub(following.meta.delta_offset.unwrap_or(0)),
                    )?),
                    (None, None) => None,
                };
                let deltas_bad = m.delta_offset.is_some_and(|d| d < 0)
                    || m.delta_offset_end.is_some_and(|end| end < m.delta_offset.unwrap_or(0));
                if m.committed_offset < m.base_offset
                    || m.size_bytes < 0
                    || deltas_bad
                    || next.is_some_and(|n| n < base)
                {
                    return Err(Error::CorruptMetadata {
                        object: e.manifest.clone(),
                        byte_offset: 0,
                        reason: format!(
                            "segment entry at raft offset {} ends at {} with {} bytes",
                            m.base_offset, m.committed_offset, m.size_bytes
                        ),
                    });
                }
                if let Some(following) = entries.get(i + 1) {
                    if following.meta.base_offset <= m.committed_offset {
                        return Err(Error::Inconsistent {
                            object: e.manifest.clone(),
                            reason: format!(
                                "segment entries at raft offsets {}..={} and {} overlap",
                                m.base_offset, m.committed_offset, following.meta.base_offset
                            ),
                        });
                    }
                    // Raft-contiguous neighbours meet in Kafka offsets too: one's translated
                    // offsets at its end are the next one's at its start.
                    let contiguous = i128::from(m.committed_offset) + 1 == i128::from(following.meta.base_offset);
                    if contiguous
                        && m.delta_offset_end.is_some()
                        && following.meta.delta_offset.unwrap_or(0) != m.delta_offset_end.unwrap_or(0)
                    {
                        return Err(Error::Inconsistent {
                            object: e.manifest.clone(),
                            reason: format!(
                                "the segment entry at raft offset {} ends with {} translated offsets, the next one \
                                 starts with {}",
                                m.base_offset,
                                m.delta_offset_end.unwrap_or(0),
                                following.meta.delta_offset.unwrap_or(0)
                            ),
                        });
                    }
                }
                ranges.push((base, next));
            }

            let mut segments = Vec::with_capacity(entries.len());
            let mut pending_hole: Option<Offset> = None;
            for (i, ((e, found), (base, next))) in entries.iter().zip(found).zip(ranges.iter().copied()).enumerate() {
                let key = &keys[i];
                // A gap in raft offsets between entries, or a listed object the bucket lacks: the
                // offsets are in no object.
                let gap_before =
                    i > 0 && i128::from(entries[i - 1].meta.committed_offset) + 1 != i128::from(e.meta.base_offset);
                let expected = pending_hole.take().or_else(|| gap_before.then(|| ranges[i - 1].1.unwrap_or(base)));
                let Some(object) = found.segment else {
                    pending_hole = Some(expected.unwrap_or(base));
                    continue;
                };
                if let Some(expected) = expected.filter(|&expected| expected < base) {
                    holes.push(Hole {
                        topic: topic.to_string(),
                        partition,
                        expected_offset: expected,
                        found_offset: base,
                        object: key.to_string(),
                    });
                }
                let m = &e.meta;
                let transform = RedpandaSegment {
                    size_bytes: m.size_bytes as u64,
                    base_offset: m.base_offset,
                    committed_offset: m.committed_offset,
                    delta_offset: m.delta_offset.unwrap_or(0),
                    delta_offset_end: m.delta_offset_end,
                    compacted: m.is_compacted,
                    aborted: found.tx.map(|t| t.ranges).unwrap_or_default(),
                };
                let next = match next {
                    Some(next) => next,
                    // A v1 entry (no `delta_offset_end`) ending the partition: only its bytes say
                    // where its Kafka offsets end, so this one segment is read now.
                    None => {
                        let bytes = archive.fetch(&object.location).await?;
                        match transform.translate(key.as_ref(), &bytes) {
                            Ok(t) => checked(
                                key.as_ref(),
                                "the next Kafka offset",
                                m.committed_offset.checked_add(1).and_then(|n| n.checked_sub(t.delta_end)),
                            )?,
                            Err(damage) => {
                                let unread = format!(
                                    "raft offset {}: the segment's end cannot be read: {damage}",
                                    m.base_offset
                                );
                                note = Some(note.map_or(unread.clone(), |n| format!("{n}; {unread}")));
                                base.saturating_add(1)
                            }
                        }
                    }
                };
                if next == base {
                    // Internal batches only: no Kafka offset lives here.
                    continue;
                }
                segments.push(SegmentRef {
                    key: key.clone(),
                    base_offset: base,
                    next_offset: next,
                    size: object.size,
                    relative_offsets: false,
                    aborted: Default::default(),
                    transform: Transform::Redpanda(Arc::new(transform)),
                    // The revisions note goes on the first segment; a note about one segment, on it.
                    note: note.take(),
                });
            }
            // A missing last segment: its offsets are in no object. Replay refuses it like any
            // other hole (`verify` lists it), naming the missing object itself.
            if let (Some(expected), Some(last)) = (pending_hole, entries.len().checked_sub(1)) {
                if let Some(next) = ranges[last].1.filter(|&next| expected < next) {
                    holes.push(Hole {
                        topic: topic.to_string(),
                        partition,
                        expected_offset: expected,
                        found_offset: next,
                        object: keys[last].to_string(),
                    });
                }
            }
            Ok(Listing { segments, holes })
        }
        .boxed()
    }
}

/// One batch of a fixture segment ([`write_fixture`]).
#[derive(Clone, Debug)]
pub enum FixtureBatch {
    /// A Kafka v2 batch (as [`crate::segment::encode_batch_full`] writes it, at its Kafka offsets),
    /// written as a data batch. `aborted`: it belongs to an aborted transaction (or is its abort
    /// marker), so the `.tx` file lists it.
    Kafka {
        /// The batch.
        bytes: Vec<u8>,
        /// Aborted.
        aborted: bool,
    },
    /// An internal batch of `offsets` raft offsets and no Kafka offset, of batch type `kind`
    /// (2: raft configuration).
    Internal {
        /// Its batch type.
        kind: i8,
        /// Raft offsets it takes.
        offsets: u32,
    },
}

/// One partition of a fixture.
#[derive(Clone, Debug, Default)]
pub struct FixturePartition {
    /// Partition.
    pub partition: i32,
    /// Topic revision.
    pub revision: i64,
    /// Raft offsets without Kafka offsets before the first segment.
    pub start_delta: i64,
    /// Its segments, oldest first.
    pub segments: Vec<Vec<FixtureBatch>>,
    /// How many of the oldest segments go into one spillover manifest.
    pub spillover: usize,
    /// Zero bytes appended to each segment (padding).
    pub padding: usize,
}

/// Writes a Redpanda tiered-storage archive of `topic` into `archive` with this module's own
/// writer (from the format's description): segments with their `.tx` files, a JSON partition
/// manifest (and a spillover manifest) per partition, and a topic manifest. Returns each
/// partition's segment keys, oldest first. For tests and fixtures; raft offsets follow from the
/// Kafka offsets and the internal batches, which must leave no gap (`Error::Inconsistent` names
/// the partition if they do).
pub async fn write_fixture(archive: &Archive, topic: &str, partitions: &[FixturePartition]) -> Result<Vec<Vec<Path>>> {
    let put = |key: Path, bytes: Vec<u8>| async move {
        archive
            .store
            .put(&key, Bytes::from(bytes).into())
            .await
            .map(|_| ())
            .map_err(|source| Error::ObjectStore { object: key.to_string(), source })
    };
    let topic_manifest = serde_json::json!({
        "version": 1, "namespace": NAMESPACE, "topic": topic, "partition_count": partitions.len(),
        "revision_id": partitions.first().map_or(0, |p| p.revision),
    });
    put(archive.key(&topic_manifest_key(topic)), topic_manifest.to_string().into_bytes()).await?;
    let mut keys = Vec::new();
    for part in partitions {
        let misuse =
            |reason: String| Error::Inconsistent { object: format!("fixture {topic}/{}", part.partition), reason };
        let mut delta = part.start_delta;
        // Raft offsets start where the first Kafka batch's offset plus the translated offsets
        // before it put them.
        let first_kafka = part.segments.iter().flatten().find_map(|b| match b {
            FixtureBatch::Kafka { bytes, .. } if bytes.len() >= 8 => {
                Some(i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")))
            }
            _ => None,
        });
        let origin = first_kafka.unwrap_or(0) + part.start_delta;
        let mut raft_next: Option<i64> = None;
        let mut metas = Vec::new();
        let mut part_keys = Vec::new();
        let mut open_abort: BTreeMap<(i64, i16), i64> = BTreeMap::new();
        for batches in &part.segments {
            let (delta_start, mut out, mut ranges) = (delta, Vec::new(), Vec::new());
            let mut first: Option<i64> = None;
            let mut timestamps: Option<(i64, i64)> = None;
            for batch in batches {
                let (raft, mut header, body, kind) = match batch {
                    FixtureBatch::Kafka { bytes, .. } => {
                        if bytes.len() < HEADER_LEN {
                            return Err(misuse("a Kafka batch shorter than its header".into()));
                        }
                        let kafka = i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
                        let raft = kafka + delta;
                        let mut h = [0u8; HEADER_LEN];
                        h[17..21].copy_from_slice(&bytes[17..21]);
                        h[17..21].reverse();
                        swap_tail(&bytes[21..HEADER_LEN], &mut h[21..]);
                        let (first_ts, max_ts) = (le_i64(&h, 27), le_i64(&h, 35));
                        timestamps =
                            Some(timestamps.map_or((first_ts, max_ts), |(a, b)| (a.min(first_ts), b.max(max_ts))));
                        (raft, h, bytes[HEADER_LEN..].to_vec(), DATA)
                    }
                    FixtureBatch::Internal { kind, offsets } => {
                        if !TRANSLATED.contains(kind) || *offsets == 0 {
                            return Err(misuse(format!("internal batch of type {kind} and {offsets} offsets")));
                        }
                        let raft = raft_next.unwrap_or(origin);
                        let mut h = [0u8; HEADER_LEN];
                        h[23..27].copy_from_slice(&(offsets.saturating_sub(1) as i32).to_le_bytes());
                        h[43..51].copy_from_slice(&(-1i64).to_le_bytes());
                        h[51..53].copy_from_slice(&(-1i16).to_le_bytes());
                        h[57..61].copy_from_slice(&(*offsets as i32).to_le_bytes());
                        let body = vec![0x42; 17];
                        let crc = crc32c::crc32c_append(crc32c::crc32c(&kafka_tail(&h)), &body);
                        h[17..21].copy_from_slice(&crc.to_le_bytes());
                        (raft, h, body, *kind)
                    }
                };
                if raft_next.is_some_and(|n| n != raft) {
                    return Err(misuse(format!("raft offset {raft} follows {raft_next:?}: offsets leave a gap")));
                }
                let last_delta = le_i32(&header, 23);
                let last = raft + i64::from(last_delta);
                header[4..8].copy_from_slice(&((HEADER_LEN + body.len()) as i32).to_le_bytes());
                header[8..16].copy_from_slice(&raft.to_le_bytes());
                header[16] = kind as u8;
                let header_crc = crc32c::crc32c(&header[4..]);
                header[0..4].copy_from_slice(&header_crc.to_le_bytes());
                out.extend_from_slice(&header);
                out.extend_from_slice(&body);
                if let FixtureBatch::Kafka { aborted: true, .. } = batch {
                    let pid = (le_i64(&header, 43), le_i16(&header, 51));
                    let begun = *open_abort.entry(pid).or_insert(raft);
                    if le_i16(&header, 21) & 0x20 != 0 {
                        open_abort.remove(&pid);
                        ranges.push(TxRange { pid: ProducerIdentity { id: pid.0, epoch: pid.1 }, first: begun, last });
                    }
                }
                if TRANSLATED.contains(&kind) {
                    delta += i64::from(last_delta) + 1;
                }
                first.get_or_insert(raft);
                raft_next = Some(last + 1);
            }
            let (Some(base), Some(next)) = (first, raft_next) else { return Err(misuse("an empty segment".into())) };
            // Aborted transactions still open at the segment's end are listed up to it.
            for (&(id, epoch), &begun) in &open_abort {
                ranges.push(TxRange { pid: ProducerIdentity { id, epoch }, first: begun, last: next - 1 });
            }
            open_abort.values_mut().for_each(|begun| *begun = next);
            out.extend(std::iter::repeat_n(0u8, part.padding));
            let meta = SegmentMeta {
                base_offset: base,
                committed_offset: next - 1,
                delta_offset: Some(delta_start),
                delta_offset_end: Some(delta),
                segment_term: Some(1),
                archiver_term: Some(1),
                sname_format: Some(3),
                size_bytes: out.len() as i64,
                is_compacted: false,
                base_timestamp: timestamps.map(|t| t.0),
                max_timestamp: timestamps.map(|t| t.1),
                ntp_revision: Some(part.revision),
            };
            let key =
                archive.key(&segment_key(topic, part.partition, part.revision, &meta.name(None), meta.archiver_term));
            if !ranges.is_empty() {
                let tx = TxFile { version: 0, compat_version: 0, ranges };
                put(Path::from(format!("{key}.tx")), serde_json::to_vec(&tx).expect("serializes")).await?;
            }
            put(key.clone(), out).await?;
            part_keys.push(key);
            metas.push(meta);
        }
        let manifest_key = partition_manifest_key(topic, part.partition, part.revision);
        let by_name = |metas: &[SegmentMeta]| {
            Segments::Map(metas.iter().map(|m| (format!("{}-{}-v1.log", m.base_offset, 1), m.clone())).collect())
        };
        let (spilled, kept) = metas.split_at(part.spillover.min(metas.len()));
        let mut spillover = Vec::new();
        if let (Some(lo), Some(hi)) = (spilled.first(), spilled.last()) {
            let manifest = PartitionManifest {
                version: Some(2),
                namespace: Some(NAMESPACE.into()),
                topic: Some(topic.into()),
                partition: Some(part.partition.into()),
                revision: Some(part.revision),
                last_offset: Some(hi.committed_offset),
                start_offset: Some(lo.base_offset),
                segments: by_name(spilled),
                ..PartitionManifest::default()
            };
            let bytes = serde_json::to_vec(&manifest).expect("serializes");
            let (lo_k, hi_k) = (
                lo.base_offset - lo.delta_offset.unwrap_or(0),
                hi.committed_offset + 1 - hi.delta_offset_end.unwrap_or(0),
            );
            let suffix = format!(
                ".{}.{}.{lo_k}.{hi_k}.{}.{}",
                lo.base_offset,
                hi.committed_offset,
                lo.base_timestamp.unwrap_or(0),
                hi.max_timestamp.unwrap_or(0)
            );
            spillover.push(SegmentMeta {
                base_offset: lo.base_offset,
                committed_offset: hi.committed_offset,
                delta_offset: lo.delta_offset,
                delta_offset_end: hi.delta_offset_end,
                size_bytes: bytes.len() as i64,
                base_timestamp: lo.base_timestamp,
                max_timestamp: hi.max_timestamp,
                ..SegmentMeta::default()
            });
            put(archive.key(&format!("{manifest_key}{suffix}")), bytes).await?;
        }
        let manifest = PartitionManifest {
            version: Some(2),
            namespace: Some(NAMESPACE.into()),
            topic: Some(topic.into()),
            partition: Some(part.partition.into()),
            revision: Some(part.revision),
            last_offset: metas.last().map(|m| m.committed_offset),
            start_offset: kept.first().map(|m| m.base_offset),
            archive_start_offset: spilled.first().map(|m| m.base_offset),
            segments: by_name(kept),
            replaced: None,
            spillover,
        };
        put(archive.key(&manifest_key), serde_json::to_vec(&manifest).expect("serializes")).await?;
        keys.push(part_keys);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::runtime;
    use crate::layout::conformance::{check_layout, history};
    use crate::segment::{control_record, encode_batch_full, BatchOptions, Codec};
    use kappa_engine::Record;
    use proptest::prelude::*;

    const CODECS: [Codec; 5] = [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];

    fn kafka(records: &[Record], options: BatchOptions, aborted: bool) -> FixtureBatch {
        let mut bytes = Vec::new();
        encode_batch_full(records, &options, &mut bytes);
        FixtureBatch::Kafka { bytes, aborted }
    }

    fn config() -> FixtureBatch {
        FixtureBatch::Internal { kind: 2, offsets: 1 }
    }

    fn record(offset: i64) -> Record {
        Record { offset, timestamp: Some(offset * 10), key: None, value: Some(Bytes::from(format!("t{offset}"))) }
    }

    /// `history()` as Redpanda writes it: segments of 12 records in batches of 4, every codec,
    /// each segment but partition 0's first opening with a raft configuration batch (and 3
    /// translated offsets before the first segment); partition 0 then holds a transaction that
    /// aborts, one that commits, and more records; partition 1's two oldest segments sit in a
    /// spillover manifest; partition 2's segments end in padding. Returns the archive, the
    /// records a Kafka consumer would read, the segment to damage and a middle one to delete.
    fn redpanda_archive(name: &str) -> (Archive, Vec<(i32, Vec<Record>)>, Path, Path) {
        let archive = Archive::open(&format!("memory://{name}")).expect("opens");
        let archive = Archive { layout: Arc::new(RedpandaLayout), ..archive };
        let mut expected = history();
        let mut partitions = Vec::new();
        for (p, records) in &mut expected {
            let mut segments: Vec<Vec<FixtureBatch>> = Vec::new();
            for (n, chunk) in records.chunks(12).enumerate() {
                let mut batches = Vec::new();
                if *p != 0 || n > 0 {
                    batches.push(config());
                }
                let codec = CODECS[(*p as usize + n) % CODECS.len()];
                for batch in chunk.chunks(4) {
                    batches.push(kafka(batch, BatchOptions { codec, ..BatchOptions::default() }, false));
                }
                segments.push(batches);
            }
            if *p == 0 {
                let next = records.last().expect("records").offset + 1;
                let txn = |pid| BatchOptions { producer_id: pid, transactional: true, ..BatchOptions::default() };
                let last = segments.last_mut().expect("segments");
                last.push(kafka(&[record(next), record(next + 1)], txn(7), true));
                last.push(config());
                last.push(kafka(&[control_record(next + 2, 0, false)], BatchOptions { control: true, ..txn(7) }, true));
                last.push(kafka(
                    &[record(next + 3), record(next + 4)],
                    BatchOptions { codec: Codec::Zstd, ..txn(8) },
                    false,
                ));
                last.push(kafka(&[control_record(next + 5, 0, true)], BatchOptions { control: true, ..txn(8) }, false));
                let tail: Vec<Record> = (next + 6..next + 9).map(record).collect();
                last.push(kafka(&tail, BatchOptions::default(), false));
                records.extend([record(next + 3), record(next + 4)]);
                records.extend(tail);
            }
            partitions.push(FixturePartition {
                partition: *p,
                revision: 17,
                start_delta: if *p == 0 { 3 } else { 0 },
                segments,
                spillover: if *p == 1 { 2 } else { 0 },
                padding: if *p == 2 { 100 } else { 0 },
            });
        }
        let keys = runtime().block_on(write_fixture(&archive, "t", &partitions)).expect("writes");
        (archive, expected, keys[1][1].clone(), keys[2][1].clone())
    }

    #[test]
    fn redpanda_layout_conforms() {
        let (archive, expected, victim, missing) = redpanda_archive("conformance-redpanda");
        let detected = Archive::open_layout("memory://conformance-redpanda", None, None).expect("opens");
        assert_eq!(detected.layout.name(), "redpanda");
        check_layout(&archive, "t", &expected, &victim, &missing);
    }

    #[test]
    fn offsets_translate_transactions_abort_and_the_handoff_is_the_next_kafka_offset() {
        let (archive, expected, ..) = redpanda_archive("redpanda-offsets");
        let summary = crate::inspect::summarize(&archive, "t").expect("summarizes");
        let p0 = &summary.partitions[&0];
        assert_eq!((p0.control_batches, p0.aborted_batches, p0.transactional_batches), (2, 1, 2));
        assert!(summary.transactions_note().expect("transactions").contains("1 of aborted transactions skipped"));
        assert_eq!(p0.codecs.len(), 5, "every codec: {:?}", p0.codecs);
        let replay = crate::ReplaySource::open(archive.clone(), "t").expect("opens");
        let ends = replay.end_offsets();
        // Partition 0 ends after its last record (markers and aborted records take Kafka offsets,
        // raft configuration batches take none); the others after their last record.
        for (p, records) in &expected {
            assert_eq!(ends[p], records.last().expect("records").offset + 1, "partition {p}");
        }
        // Partition 1's oldest segments come from the spillover manifest.
        let segments = runtime().block_on(RedpandaLayout.segments(&archive, "t", 1)).expect("lists");
        assert_eq!(segments[0].base_offset, 5);
        assert_eq!(segments.len(), 5);
    }

    #[test]
    fn a_missing_last_segment_is_a_hole_naming_it() {
        let (archive, expected, ..) = redpanda_archive("redpanda-last");
        let segments = runtime().block_on(RedpandaLayout.segments(&archive, "t", 2)).expect("lists");
        let last = segments.last().expect("segments").clone();
        runtime().block_on(archive.store.delete(&last.key)).expect("delete");
        let error = runtime().block_on(RedpandaLayout.segments(&archive, "t", 2)).expect_err("a hole");
        let end = expected[2].1.last().expect("records").offset + 1;
        match error {
            Error::ArchiveHole { expected_offset, found_offset, object, .. } => {
                assert_eq!((expected_offset, found_offset, object), (last.base_offset, end, last.key.to_string()));
            }
            other => panic!("expected a hole, got {other}"),
        }
    }

    #[test]
    fn keys_follow_the_hash_scheme() {
        assert_eq!(xxh32(""), 0x02cc_5d05, "xxhash32 with seed 0");
        let manifest = partition_manifest_key("t", 0, 17);
        let hash = xxh32("kafka/t/0_17") & 0xF000_0000;
        assert_eq!(manifest, format!("{hash:08x}/meta/kafka/t/0_17/manifest.json"));
        assert!(manifest.as_bytes()[1..8].iter().all(|&b| b == b'0'));
        let meta = SegmentMeta {
            base_offset: 5,
            committed_offset: 9,
            size_bytes: 300,
            segment_term: Some(2),
            sname_format: Some(3),
            ..SegmentMeta::default()
        };
        assert_eq!(meta.name(None), "5-9-300-2-v1.log");
        assert_eq!(
            SegmentMeta { sname_format: None, segment_term: None, ..meta.clone() }.name(Some("5-4-v1.log")),
            "5-4-v1.log"
        );
        let key = segment_key("t", 0, 17, "5-9-300-2-v1.log", Some(3));
        assert_eq!(key, format!("{:08x}/kafka/t/0_17/5-9-300-2-v1.log.3", xxh32("kafka/t/0_17/5-9-300-2-v1.log")));
    }

    #[test]
    fn binary_manifests_are_refused_naming_the_object() {
        let (archive, ..) = redpanda_archive("redpanda-binary");
        let json = archive.key(&partition_manifest_key("t", 0, 17));
        let bin = Path::from(format!("{}.bin", json.as_ref().strip_suffix(".json").expect("json key")));
        runtime().block_on(archive.store.delete(&json)).expect("delete");
        runtime()
            .block_on(archive.store.put(&bin, Bytes::from_static(&[1, 0, 4, 0, 0, 0, 0, 0, 0, 0]).into()))
            .expect("put");
        let error = runtime().block_on(RedpandaLayout.segments(&archive, "t", 0)).expect_err("refused");
        assert!(matches!(&error, Error::UnsupportedFormat { object, .. } if object == bin.as_ref()), "{error}");
        assert!(error.to_string().contains("JSON"), "{error}");
    }

    #[test]
    fn a_manifest_that_disagrees_with_its_segment_is_named() {
        let (archive, ..) = redpanda_archive("redpanda-disagree");
        let key = archive.key(&partition_manifest_key("t", 2, 17));
        let bytes = runtime().block_on(archive.fetch(&key)).expect("manifest");
        let mut manifest = PartitionManifest::parse("m", &bytes).expect("parses");
        let Segments::Map(map) = &mut manifest.segments else { panic!("a map") };
        // One more translated offset than the last segment holds: its bytes disagree (a segment
        // with a neighbour after it would disagree with that neighbour, refused at listing).
        let last = map.values_mut().max_by_key(|m| m.base_offset).expect("a segment");
        last.delta_offset_end = last.delta_offset_end.map(|d| d + 1);
        runtime().block_on(archive.store.put(&key, serde_json::to_vec(&manifest).expect("json").into())).expect("put");
        let summary = crate::inspect::summarize(&archive, "t").expect("summarizes");
        let damaged = summary.damaged();
        assert!(damaged.iter().any(|(_, why)| why.contains("the partition manifest says")), "{damaged:?}");
        // The same disagreement on a middle segment is a disagreement between neighbours.
        let Segments::Map(map) = &mut manifest.segments else { panic!("a map") };
        let first = map.values_mut().min_by_key(|m| m.base_offset).expect("a segment");
        first.delta_offset_end = first.delta_offset_end.map(|d| d + 1);
        runtime().block_on(archive.store.put(&key, serde_json::to_vec(&manifest).expect("json").into())).expect("put");
        let error = runtime().block_on(RedpandaLayout.list(&archive, "t", 2)).expect_err("refused");
        assert!(matches!(&error, Error::Inconsistent { object, .. } if object == key.as_ref()), "{error}");
    }

    fn segment_bytes() -> (RedpandaSegment, Vec<u8>) {
        let (archive, ..) = redpanda_archive("redpanda-fuzz");
        let segments = runtime().block_on(RedpandaLayout.segments(&archive, "t", 0)).expect("lists");
        let last = segments.last().expect("segments");
        let Transform::Redpanda(segment) = &last.transform else { panic!("a redpanda segment") };
        let bytes = runtime().block_on(archive.fetch(&last.key)).expect("fetch");
        ((**segment).clone(), bytes.to_vec())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_manifest_or_tx_bytes_parse_or_fail_with_a_named_error(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for result in [PartitionManifest::parse("m", &bytes).map(|_| ()), TxFile::parse("m", &bytes).map(|_| ())] {
                match result {
                    Ok(()) => {}
                    Err(Error::CorruptMetadata { object, byte_offset, .. }) => {
                        prop_assert_eq!(object, "m");
                        prop_assert!(byte_offset <= bytes.len() as u64);
                    }
                    Err(other) => prop_assert!(false, "unexpected error {}", other),
                }
            }
        }

        #[test]
        fn any_manifest_numbers_list_or_fail_with_a_named_error(
            base in any::<i64>(), committed in any::<i64>(), delta in any::<i64>(), end in any::<i64>(), size in any::<i64>(),
        ) {
            let archive = Archive::open("memory://redpanda-numbers").expect("opens");
            let manifest = serde_json::json!({"start_offset": base, "segments": {"x": {"base_offset": base,
                "committed_offset": committed, "delta_offset": delta, "delta_offset_end": end, "size_bytes": size,
                "sname_format": 3}}});
            let key = archive.key(&partition_manifest_key("t", 0, 1));
            runtime().block_on(archive.store.put(&key, serde_json::to_vec(&manifest).expect("json").into())).expect("put");
            match runtime().block_on(RedpandaLayout.list(&archive, "t", 0)) {
                Ok(listing) => prop_assert!(listing.segments.is_empty(), "no segment object exists"),
                Err(Error::CorruptMetadata { .. } | Error::Inconsistent { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {}", other),
            }
        }
    }

    #[test]
    fn any_damage_to_a_segment_is_an_error_naming_object_and_offset_never_a_panic() {
        let (segment, bytes) = segment_bytes();
        let clean = segment.translate("s", &bytes).expect("translates");
        assert_eq!(clean.aborted.len(), 1);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(512));
        let strategy = (0..bytes.len(), any::<u8>(), 0..bytes.len() + 1);
        runner
            .run(&strategy, |(at, xor, cut)| {
                let mut damaged = bytes.clone();
                damaged[at] ^= xor.max(1);
                for candidate in [damaged.clone(), damaged[..cut].to_vec()] {
                    let same_size = RedpandaSegment { size_bytes: candidate.len() as u64, ..segment.clone() };
                    match same_size.translate("s", &candidate) {
                        // A flipped padding-free byte always fails a CRC; a cut at a batch
                        // boundary leaves raft offsets short of the manifest's.
                        Ok(t) => prop_assert!(candidate == bytes && t == clean),
                        Err(Error::CorruptBatch { object, byte_offset, .. }) => {
                            prop_assert_eq!(object, "s");
                            prop_assert!(byte_offset <= candidate.len() as u64);
                        }
                        Err(Error::Inconsistent { object, .. }) => prop_assert_eq!(object, "s"),
                        Err(other) => prop_assert!(false, "unexpected error {}", other),
                    }
                }
                Ok(())
            })
            .expect("no damage passes unnoticed");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn any_bytes_walk_to_batches_or_a_named_error(bytes in proptest::collection::vec(any::<u8>(), 0..400), compacted in any::<bool>()) {
            let segment = RedpandaSegment {
                size_bytes: bytes.len() as u64,
                committed_offset: i64::MAX,
                compacted,
                ..RedpandaSegment::default()
            };
            match segment.translate("s", &bytes) {
                Ok(t) => prop_assert!(t.batches.len() <= bytes.len()),
                Err(Error::CorruptBatch { .. } | Error::Inconsistent { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {}", other),
            }
        }
    }

    // ---- Helpers of the tests below: objects, manifests, replay. ----

    fn block<T>(future: impl std::future::Future<Output = T>) -> T {
        runtime().block_on(future)
    }

    fn object(archive: &Archive, key: &Path) -> Vec<u8> {
        block(archive.fetch(key)).expect("object exists").to_vec()
    }

    fn put(archive: &Archive, key: &Path, bytes: Vec<u8>) {
        block(archive.store.put(key, Bytes::from(bytes).into())).expect("put");
    }

    fn exists(archive: &Archive, key: &Path) -> bool {
        block(archive.store.head(key)).is_ok()
    }

    fn delete(archive: &Archive, key: &Path) {
        block(archive.store.delete(key)).expect("delete");
    }

    fn tx_key(key: &Path) -> Path {
        Path::from(format!("{key}.tx"))
    }

    /// Moves the object `from` (and its `.tx` side file, if any) to `to`.
    fn rename(archive: &Archive, from: &Path, to: &Path) {
        for (from, to) in [(from.clone(), to.clone()), (tx_key(from), tx_key(to))] {
            if exists(archive, &from) {
                let bytes = object(archive, &from);
                delete(archive, &from);
                put(archive, &to, bytes);
            }
        }
    }

    fn manifest_at(archive: &Archive, key: &Path) -> PartitionManifest {
        PartitionManifest::parse(key.as_ref(), &object(archive, key)).expect("parses")
    }

    fn put_manifest(archive: &Archive, key: &Path, manifest: &PartitionManifest) {
        put(archive, key, serde_json::to_vec(manifest).expect("json"));
    }

    fn map_of(manifest: &mut PartitionManifest) -> &mut BTreeMap<String, SegmentMeta> {
        match &mut manifest.segments {
            Segments::Map(map) => map,
            other => panic!("a map of segments, not {other:?}"),
        }
    }

    /// The entry with the largest base offset.
    fn last_entry(manifest: &mut PartitionManifest) -> &mut SegmentMeta {
        map_of(manifest).values_mut().max_by_key(|m| m.base_offset).expect("an entry")
    }

    /// The key the fixture wrote `meta`'s segment under (revision 17).
    fn fixture_key(archive: &Archive, partition: i32, meta: &SegmentMeta) -> Path {
        archive.key(&segment_key("t", partition, 17, &meta.name(None), meta.archiver_term))
    }

    fn top_manifest_key(archive: &Archive, partition: i32) -> Path {
        archive.key(&partition_manifest_key("t", partition, 17))
    }

    /// The manifests of `partition`: its partition manifest and its spillover manifests.
    fn manifest_keys(archive: &Archive, partition: i32) -> Vec<Path> {
        let top = top_manifest_key(archive, partition);
        let dir = Path::from(top.as_ref().rsplit_once('/').expect("a directory").0);
        let objects = block(archive.list_objects(&dir)).expect("lists");
        let mut keys: Vec<Path> = objects
            .into_iter()
            .map(|m| m.location)
            .filter(|k| k.filename().is_some_and(|n| n.starts_with("manifest.json")))
            .collect();
        keys.sort();
        keys
    }

    fn spillover_key(archive: &Archive, partition: i32) -> Path {
        let top = top_manifest_key(archive, partition);
        let spilled: Vec<Path> = manifest_keys(archive, partition).into_iter().filter(|k| *k != top).collect();
        assert_eq!(spilled.len(), 1, "one spillover manifest: {spilled:?}");
        spilled[0].clone()
    }

    /// Replays every partition of topic `t`, failing with replay's own error.
    fn replay(archive: &Archive) -> std::result::Result<BTreeMap<i32, Vec<Record>>, Error> {
        use kappa_engine::SourceFactory;
        let source = crate::ReplaySource::open(archive.clone(), "t")?;
        let ours = |e: kappa_engine::BoxError| *e.downcast::<Error>().expect("an error of kappa-replay");
        let parts = source.partitions().map_err(ours)?;
        let owned: Vec<(kappa_engine::PartitionId, Option<Offset>)> = parts.into_iter().map(|p| (p, None)).collect();
        let mut reader = source.open(&owned).map_err(ours)?;
        let (mut out, mut finished) = (Vec::new(), Vec::new());
        let mut polls = 0;
        while finished.len() < owned.len() {
            reader.poll(&mut out, &mut finished).map_err(ours)?;
            polls += 1;
            assert!(polls < 1_000_000, "replay never finishes");
            std::thread::yield_now();
        }
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for (index, record) in out {
            by_partition.entry(owned[index].0.partition).or_default().push(record);
        }
        Ok(by_partition)
    }

    fn all(expected: &[(i32, Vec<Record>)]) -> BTreeMap<i32, Vec<Record>> {
        expected.iter().cloned().collect()
    }

    /// One batch of a Redpanda segment, as the test walks it (by sizes, unchecked).
    #[derive(Clone, Copy, Debug)]
    struct Walked {
        pos: usize,
        size: usize,
        kind: i8,
        /// Where its Kafka batch starts in the translation (data batches).
        out: Option<usize>,
    }

    fn walk(bytes: &[u8]) -> Vec<Walked> {
        let (mut pos, mut out, mut walked) = (0, 0, Vec::new());
        while pos + HEADER_LEN <= bytes.len() && bytes[pos..pos + HEADER_LEN].iter().any(|&b| b != 0) {
            let size = le_i32(bytes, pos + 4) as usize;
            let kind = bytes[pos + 16] as i8;
            walked.push(Walked { pos, size, kind, out: (kind == DATA).then_some(out) });
            if kind == DATA {
                out += size;
            }
            pos += size;
        }
        walked
    }

    /// The Kafka v2 batches of `bytes`: (first offset, last offset, start, length), each batch's
    /// Kafka CRC checked.
    fn kafka_batches(bytes: &[u8]) -> Vec<(i64, i64, usize, usize)> {
        let (mut pos, mut out) = (0, Vec::new());
        while pos < bytes.len() {
            let base = i64::from_be_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes"));
            let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().expect("4 bytes")) as usize + 12;
            let delta = i32::from_be_bytes(bytes[pos + 23..pos + 27].try_into().expect("4 bytes"));
            let crc = u32::from_be_bytes(bytes[pos + 17..pos + 21].try_into().expect("4 bytes"));
            assert_eq!(crc, crc32c::crc32c(&bytes[pos + 21..pos + len]), "Kafka CRC of the batch at {base}");
            out.push((base, base + i64::from(delta), pos, len));
            pos += len;
        }
        out
    }

    // ---- 1. Header fields changed with valid CRCs: the checks after the header CRC. ----

    /// The header fields after `header_crc`: name, byte offset in the header, width.
    const FIELDS: [(&str, usize, usize); 12] = [
        ("size_bytes", 4, 4),
        ("base_offset", 8, 8),
        ("type", 16, 1),
        ("crc", 17, 4),
        ("attrs", 21, 2),
        ("last_offset_delta", 23, 4),
        ("first_ts", 27, 8),
        ("max_ts", 35, 8),
        ("producer_id", 43, 8),
        ("producer_epoch", 51, 2),
        ("base_sequence", 53, 4),
        ("record_count", 57, 4),
    ];

    /// A field's little-endian value, sign-extended.
    fn field(h: &[u8], at: usize, width: usize) -> i64 {
        let mut b = [0u8; 8];
        b[..width].copy_from_slice(&h[at..at + width]);
        let shift = 64 - 8 * width as u32;
        (i64::from_le_bytes(b) << shift) >> shift
    }

    /// How a batch type translates: data, translated internal, other internal.
    fn class(kind: i8) -> u8 {
        if kind == DATA {
            0
        } else if TRANSLATED.contains(&kind) {
            1
        } else {
            2
        }
    }

    #[derive(Clone, Debug)]
    enum Change {
        To(i64),
        By(i64),
    }

    #[derive(Debug)]
    enum Expect {
        /// The clean translation (the bytes are unchanged in effect).
        Same,
        /// A valid segment that differs: exactly this translation.
        Translation(Translated),
        /// A `CorruptBatch` at one of these byte offsets.
        CorruptAt(Vec<u64>),
        /// A `CorruptBatch` at or after this byte offset, or `Inconsistent`.
        ErrorFrom(u64),
    }

    #[test]
    fn any_header_field_with_valid_crcs_translates_as_it_says_or_fails_naming_object_and_offset() {
        let (segment, bytes) = segment_bytes();
        let clean = segment.translate("s", &bytes).expect("translates");
        let walked = walk(&bytes);
        assert_eq!(walked.last().map(|w| w.pos + w.size), Some(bytes.len()), "no padding in this segment");
        assert!(walked.iter().any(|w| w.kind == DATA) && walked.iter().any(|w| w.kind == 2), "{walked:?}");
        assert_eq!(clean.aborted.len(), 1);
        kafka_batches(&clean.batches);
        // What each run reached: header CRC passed, then failed the batch CRC (17), the size (4) or
        // the raft offsets (8) of the changed batch, an error after it or at the end, translated
        // the same, or translated to a different valid result.
        let reached: [std::sync::atomic::AtomicUsize; 7] = Default::default();
        let count = |i: usize| reached[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(4096));
        let change = prop_oneof![any::<i64>().prop_map(Change::To), (-2i64..=2).prop_map(Change::By)];
        let strategy = (0..walked.len(), 0..FIELDS.len(), change, any::<bool>());
        runner
            .run(&strategy, |(b, f, change, fix_batch_crc)| {
                let batch = walked[b];
                let (name, at, width) = FIELDS[f];
                let mut damaged = bytes.clone();
                let h = &mut damaged[batch.pos..batch.pos + HEADER_LEN];
                let old = field(h, at, width);
                let new = match change {
                    Change::To(v) => v,
                    Change::By(d) => old.wrapping_add(d),
                };
                h[at..at + width].copy_from_slice(&new.to_le_bytes()[..width]);
                // The batch CRC covers the fields from `attrs` on (and the body); the header CRC
                // covers every field after it.
                let fix_batch_crc = fix_batch_crc && at >= 21;
                if fix_batch_crc {
                    let body = &bytes[batch.pos + HEADER_LEN..batch.pos + batch.size];
                    let crc = crc32c::crc32c_append(crc32c::crc32c(&kafka_tail(h)), body);
                    h[17..21].copy_from_slice(&crc.to_le_bytes());
                }
                let header_crc = crc32c::crc32c(&h[4..]);
                h[0..4].copy_from_slice(&header_crc.to_le_bytes());
                let changed = field(h, at, width) != old;
                let pos = batch.pos as u64;
                let expect = if !changed {
                    Expect::Same
                } else {
                    match name {
                        // Out of range, or a CRC over the wrong body.
                        "size_bytes" => Expect::CorruptAt(vec![pos + 4, pos + 17]),
                        // Not covered by the batch CRC: the raft offset checks find it.
                        "base_offset" => Expect::CorruptAt(vec![pos + 8]),
                        "type" => match (class(batch.kind), class(new as i8)) {
                            // Another translated internal type: the same in effect.
                            (a, b) if a == b => Expect::Same,
                            // A data batch retyped as an internal one that takes its Kafka
                            // offsets along: the translation lacks it.
                            (0, 2) => {
                                let out = batch.out.expect("a data batch");
                                let kafka = i64::from_be_bytes(clean.batches[out..out + 8].try_into().expect("8"));
                                let mut rest = clean.batches[..out].to_vec();
                                rest.extend_from_slice(&clean.batches[out + batch.size..]);
                                Expect::Translation(Translated {
                                    batches: Bytes::from(rest),
                                    aborted: clean.aborted.iter().copied().filter(|a| a.first != kafka).collect(),
                                    internal_batches: clean.internal_batches + 1,
                                    delta_end: clean.delta_end,
                                })
                            }
                            // Translated offsets change: `delta_offset_end` disagrees.
                            _ => Expect::ErrorFrom(pos),
                        },
                        "crc" => Expect::CorruptAt(vec![pos + 17]),
                        _ if !fix_batch_crc => Expect::CorruptAt(vec![pos + 17]),
                        // The raft offsets no longer meet the next batch's (or the segment's end).
                        "last_offset_delta" => Expect::ErrorFrom(pos),
                        // An internal batch's other fields mean nothing.
                        _ if batch.kind != DATA => Expect::Same,
                        // A data batch's: its Kafka batch carries the new value (big-endian, at the
                        // same place in Kafka's header) and the new CRC; whether it is aborted
                        // follows its attributes and producer.
                        _ => {
                            let out = batch.out.expect("a data batch");
                            let mut kafka_bytes = clean.batches.to_vec();
                            for (at, width) in [(at, width), (17, 4)] {
                                let field = &mut kafka_bytes[out + at..out + at + width];
                                field.copy_from_slice(&h[at..at + width]);
                                field.reverse();
                            }
                            let kafka = i64::from_be_bytes(kafka_bytes[out..out + 8].try_into().expect("8"));
                            let (raft, attrs, pid, epoch) = (le_i64(h, 8), le_i16(h, 21), le_i64(h, 43), le_i16(h, 51));
                            let mut aborted: Vec<AbortedTxn> =
                                clean.aborted.iter().copied().filter(|a| a.first != kafka).collect();
                            let in_aborted = segment
                                .aborted
                                .iter()
                                .any(|r| r.pid.id == pid && r.pid.epoch == epoch && r.first <= raft && raft <= r.last);
                            if attrs & 0x10 != 0 && attrs & 0x20 == 0 && in_aborted {
                                let last = kafka + i64::from(le_i32(h, 23));
                                aborted.push(AbortedTxn { producer_id: pid, first: kafka, last });
                                aborted.sort_by_key(|a| a.first);
                            }
                            Expect::Translation(Translated {
                                batches: Bytes::from(kafka_bytes),
                                aborted,
                                ..clean.clone()
                            })
                        }
                    }
                };
                let got = std::panic::catch_unwind(|| segment.translate("s", &damaged));
                let got = match got {
                    Ok(got) => got,
                    Err(_) => return Err(TestCaseError::fail(format!("{name} of batch {b}: {old} → {new} panics"))),
                };
                let why = format!("{name} of batch {b} at {pos}: {old} → {new} (batch CRC fixed: {fix_batch_crc})");
                match (&expect, got) {
                    (Expect::Same, Ok(t)) => {
                        prop_assert_eq!(&t, &clean, "{}", why);
                        count(if damaged == bytes { 5 } else { 6 });
                    }
                    (Expect::Translation(x), Ok(t)) => {
                        prop_assert_ne!(&t, &clean, "{}", why);
                        prop_assert_eq!(&t, x, "{}", why);
                        kafka_batches(&t.batches);
                        count(6);
                    }
                    (Expect::CorruptAt(offsets), Err(Error::CorruptBatch { object, byte_offset, .. })) => {
                        prop_assert_eq!(object.as_str(), "s", "{}", why);
                        prop_assert!(
                            offsets.contains(&byte_offset),
                            "{}: at {}, expected one of {:?}",
                            why,
                            byte_offset,
                            offsets
                        );
                        count(match byte_offset - pos {
                            17 => 0,
                            4 => 1,
                            _ => 2,
                        });
                    }
                    (Expect::ErrorFrom(from), Err(Error::CorruptBatch { object, byte_offset, .. })) => {
                        prop_assert_eq!(object.as_str(), "s", "{}", why);
                        prop_assert!(
                            (*from..=bytes.len() as u64).contains(&byte_offset),
                            "{}: at {}, expected from {} to the object's end",
                            why,
                            byte_offset,
                            from
                        );
                        count(3);
                    }
                    (Expect::ErrorFrom(_), Err(Error::Inconsistent { object, .. })) => {
                        prop_assert_eq!(object.as_str(), "s", "{}", why);
                        count(4);
                    }
                    (expect, got) => prop_assert!(false, "{}: expected {:?}, got {:?}", why, expect, got),
                }
                Ok(())
            })
            .expect("every header change is translated as it says or refused naming object and offset");
        let reached: Vec<usize> = reached.iter().map(|r| r.load(std::sync::atomic::Ordering::Relaxed)).collect();
        // Every outcome is reached: batch CRC, size, raft offsets of the changed batch; errors after
        // it (next batch, end of the segment); unchanged bytes; changed bytes translated.
        assert!(reached.iter().all(|&n| n > 0), "outcomes reached: {reached:?}");
    }

    // ---- 2. Listing paths. ----

    /// Rewrites `partition`'s manifests (its partition manifest and spillover manifest) as Redpanda
    /// v1 wrote them: no `delta_offset_end`, names `{base}-{term}-v1.log`. The entries alternate
    /// between no `sname_format` and no `segment_term` (the term is read from the map key) and
    /// `sname_format` 1 with its `segment_term`, and between keys with and without the archiver
    /// term's suffix. Moves each segment (and its `.tx`) to its v1 key; returns those, oldest first.
    fn to_v1(archive: &Archive, partition: i32) -> Vec<Path> {
        let mut moved = BTreeMap::new();
        for key in manifest_keys(archive, partition) {
            let mut manifest = manifest_at(archive, &key);
            for (n, (listed_as, meta)) in map_of(&mut manifest).iter_mut().enumerate() {
                let old = fixture_key(archive, partition, meta);
                assert!(exists(archive, &old), "{old}");
                assert_eq!(listed_as, &format!("{}-1-v1.log", meta.base_offset));
                meta.delta_offset_end = None;
                (meta.sname_format, meta.segment_term) = if n % 2 == 0 { (None, None) } else { (Some(1), Some(1)) };
                meta.archiver_term = (moved.len() % 2 == 1).then_some(3);
                let name = format!("{}-1-v1.log", meta.base_offset);
                let new = archive.key(&segment_key("t", partition, 17, &name, meta.archiver_term));
                rename(archive, &old, &new);
                moved.insert(meta.base_offset, new);
            }
            put_manifest(archive, &key, &manifest);
        }
        moved.into_values().collect()
    }

    #[test]
    fn v1_entries_are_found_by_base_and_term_and_the_last_ones_end_is_read_from_its_bytes() {
        let (archive, expected, ..) = redpanda_archive("redpanda-v1");
        for (p, records) in &expected {
            let moved = to_v1(&archive, *p);
            assert!(moved.iter().any(|k| k.as_ref().ends_with("-v1.log")), "keys without the term's suffix");
            assert!(moved.iter().any(|k| k.as_ref().ends_with("-v1.log.3")), "keys with the term's suffix");
            let segments = block(RedpandaLayout.segments(&archive, "t", *p)).expect("lists");
            let listed: Vec<Path> = segments.iter().map(|s| s.key.clone()).collect();
            assert_eq!(listed, moved, "partition {p}: every v1 segment, by its v1 key");
            assert!(segments.iter().all(|s| s.note.is_none()), "partition {p}: {segments:?}");
            // Neighbours meet: a middle entry ends where the next one starts.
            for pair in segments.windows(2) {
                assert_eq!(pair[0].next_offset, pair[1].base_offset, "partition {p}");
            }
            // The last entry's end comes from its bytes: its internal batches take no Kafka offsets.
            let end = records.last().expect("records").offset + 1;
            assert_eq!(segments.last().expect("segments").next_offset, end, "partition {p}");
        }
        assert_eq!(replay(&archive).expect("replays"), all(&expected));
    }

    #[test]
    fn a_damaged_last_v1_segment_is_noted_at_listing_and_named_by_replay() {
        let (archive, ..) = redpanda_archive("redpanda-v1-damaged");
        let moved = to_v1(&archive, 2);
        let last = moved.last().expect("segments").clone();
        let mut bytes = object(&archive, &last);
        let at = bytes.len() / 2;
        bytes[at] ^= 0x5a;
        put(&archive, &last, bytes);
        let segments = block(RedpandaLayout.segments(&archive, "t", 2)).expect("still lists");
        assert_eq!(segments.len(), moved.len());
        let listed = segments.last().expect("segments");
        assert_eq!(listed.key, last);
        let note = listed.note.as_deref().unwrap_or_else(|| panic!("a note on the unreadable segment: {segments:?}"));
        assert!(note.contains("cannot be read") && note.contains(last.as_ref()), "{note}");
        let summary = crate::inspect::summarize(&archive, "t").expect("summarizes");
        let p2 = &summary.partitions[&2];
        assert!(p2.notes.iter().any(|n| n.contains("cannot be read")), "{:?}", p2.notes);
        assert!(summary.damaged().iter().any(|(key, _)| key == last.as_ref()), "{:?}", summary.damaged());
        match replay(&archive) {
            Err(Error::CorruptBatch { object, .. }) => assert_eq!(object, last.to_string()),
            other => panic!("expected the damage named, got {other:?}"),
        }
    }

    #[test]
    fn every_sname_format_spells_its_name() {
        let meta = SegmentMeta {
            base_offset: 5,
            committed_offset: 9,
            size_bytes: 300,
            segment_term: Some(4),
            ..SegmentMeta::default()
        };
        let with = |sname_format, segment_term| SegmentMeta { sname_format, segment_term, ..meta.clone() };
        // 1 (and none): base and term; the entry's own term before the map key's.
        assert_eq!(with(Some(1), Some(4)).name(Some("5-7-v1.log")), "5-4-v1.log");
        assert_eq!(with(Some(1), None).name(Some("5-7-v1.log")), "5-7-v1.log");
        assert_eq!(with(None, Some(4)).name(None), "5-4-v1.log");
        // 2 and 3: base, committed, size and term.
        assert_eq!(with(Some(2), Some(4)).name(None), "5-9-300-4-v1.log");
        assert_eq!(with(Some(3), None).name(Some("5-7-v1.log")), "5-9-300-7-v1.log");
    }

    #[test]
    fn entries_below_start_offset_are_skipped_and_replay_starts_at_the_first_kept_segment() {
        let (archive, expected, ..) = redpanda_archive("redpanda-retention");
        let key = top_manifest_key(&archive, 2);
        let original = manifest_at(&archive, &key);
        let metas: Vec<SegmentMeta> = original.entries().into_iter().map(|(_, m)| m).collect();
        let unfiltered = block(RedpandaLayout.segments(&archive, "t", 2)).expect("lists");
        assert_eq!(unfiltered.len(), metas.len());
        // Partition 2's segment i holds records chunks(12)[i].
        let first_of = |i: usize| expected[2].1[12 * i].offset;
        assert!((0..metas.len()).all(|i| unfiltered[i].base_offset == first_of(i)));
        // A segment goes only as a whole: one that holds `start_offset` stays.
        for (start, kept) in [
            (metas[1].committed_offset, 1),
            (metas[2].base_offset, 2),
            (metas[2].committed_offset, 2),
            (metas[2].committed_offset + 1, 3),
        ] {
            let manifest = PartitionManifest { start_offset: Some(start), ..original.clone() };
            put_manifest(&archive, &key, &manifest);
            let listing = block(RedpandaLayout.list(&archive, "t", 2)).expect("lists");
            assert!(listing.holes.is_empty(), "start {start}: {:?}", listing.holes);
            let keys: Vec<&Path> = listing.segments.iter().map(|s| &s.key).collect();
            assert_eq!(keys, unfiltered[kept..].iter().map(|s| &s.key).collect::<Vec<_>>(), "start {start}");
            let mut want = all(&expected);
            want.get_mut(&2).expect("partition 2").retain(|r| r.offset >= first_of(kept));
            assert_eq!(replay(&archive).expect("replays"), want, "start {start}");
        }
        // Retention deletes the objects too: they are not missed.
        for segment in &unfiltered[..3] {
            delete(&archive, &segment.key);
        }
        let segments = block(RedpandaLayout.segments(&archive, "t", 2)).expect("no hole");
        assert_eq!(segments[0].base_offset, first_of(3));
    }

    #[test]
    fn spilled_entries_below_archive_start_offset_are_skipped_even_when_their_manifest_is_gone() {
        let (archive, expected, ..) = redpanda_archive("redpanda-archive-start");
        let key = top_manifest_key(&archive, 1);
        let mut top = manifest_at(&archive, &key);
        let spill = top.spillover[0].clone();
        let spill_key = spillover_key(&archive, 1);
        let spilled: Vec<SegmentMeta> =
            manifest_at(&archive, &spill_key).entries().into_iter().map(|(_, m)| m).collect();
        assert_eq!(spilled.len(), 2);
        let first_of = |i: usize| expected[1].1[12 * i].offset;
        // The oldest spilled segment is below `archive_start_offset`, and gone.
        top.archive_start_offset = Some(spilled[1].base_offset);
        put_manifest(&archive, &key, &top);
        delete(&archive, &fixture_key(&archive, 1, &spilled[0]));
        let segments = block(RedpandaLayout.segments(&archive, "t", 1)).expect("no hole");
        assert_eq!(segments.len(), 4);
        assert_eq!(segments[0].key, fixture_key(&archive, 1, &spilled[1]));
        assert_eq!(segments[0].base_offset, first_of(1));
        let mut want = all(&expected);
        want.get_mut(&1).expect("partition 1").retain(|r| r.offset >= first_of(1));
        assert_eq!(replay(&archive).expect("replays"), want);
        // The whole spillover manifest is below it, and gone with its segments.
        top.archive_start_offset = Some(spill.committed_offset + 1);
        put_manifest(&archive, &key, &top);
        delete(&archive, &spill_key);
        delete(&archive, &fixture_key(&archive, 1, &spilled[1]));
        let segments = block(RedpandaLayout.segments(&archive, "t", 1)).expect("no hole");
        assert_eq!(segments.len(), 3);
        assert_eq!(segments[0].base_offset, first_of(2));
    }

    #[test]
    fn a_missing_spillover_manifest_is_a_hole_naming_its_key() {
        let (archive, expected, ..) = redpanda_archive("redpanda-spill-missing");
        let spill = manifest_at(&archive, &top_manifest_key(&archive, 1)).spillover[0].clone();
        let spill_key = spillover_key(&archive, 1);
        delete(&archive, &spill_key);
        let listing = block(RedpandaLayout.list(&archive, "t", 1)).expect("lists");
        // The manifest's own segments are still listed; the spilled ones are a hole.
        let first_kept = expected[1].1[24].offset;
        assert_eq!(listing.segments.len(), 3);
        assert_eq!(listing.segments[0].base_offset, first_kept);
        assert_eq!(listing.holes.len(), 1, "{:?}", listing.holes);
        let hole = &listing.holes[0];
        assert_eq!((hole.partition, hole.expected_offset, hole.found_offset), (1, expected[1].1[0].offset, first_kept));
        // Named by its key up to the offsets a reader cannot know without it.
        let named = hole.object.strip_suffix('…').unwrap_or_else(|| panic!("a key prefix: {}", hole.object));
        let prefix = format!("/manifest.json.{}.{}.", spill.base_offset, spill.committed_offset);
        assert!(named.ends_with(&prefix) && spill_key.as_ref().starts_with(named), "{named} of {spill_key}");
        match replay(&archive) {
            Err(Error::ArchiveHole { partition: 1, object, .. }) => assert_eq!(object, hole.object),
            other => panic!("expected the hole refused, got {other:?}"),
        }
    }

    #[test]
    fn a_segment_under_an_older_revision_is_found_where_its_entry_says() {
        let (archive, expected, ..) = redpanda_archive("redpanda-ntp-revision");
        let key = top_manifest_key(&archive, 0);
        let mut manifest = manifest_at(&archive, &key);
        // No `ntp_revision`: the manifest's revision.
        map_of(&mut manifest).values_mut().for_each(|m| m.ntp_revision = None);
        // The last segment (with its `.tx`: an aborted transaction) uploaded before a move.
        let last = last_entry(&mut manifest);
        let at_17 = fixture_key(&archive, 0, last);
        let at_5 = archive.key(&segment_key("t", 0, 5, &last.name(None), last.archiver_term));
        assert!(exists(&archive, &tx_key(&at_17)));
        rename(&archive, &at_17, &at_5);
        last.ntp_revision = Some(5);
        put_manifest(&archive, &key, &manifest);
        let segments = block(RedpandaLayout.segments(&archive, "t", 0)).expect("lists");
        assert_eq!(segments.last().expect("segments").key, at_5);
        // Its aborted records are skipped: its `.tx` is read beside it.
        assert_eq!(replay(&archive).expect("replays"), all(&expected));
        // Without its `ntp_revision` it is looked up under the manifest's: a hole naming that key.
        last_entry(&mut manifest).ntp_revision = None;
        put_manifest(&archive, &key, &manifest);
        match block(RedpandaLayout.segments(&archive, "t", 0)) {
            Err(Error::ArchiveHole { object, .. }) => assert_eq!(object, at_17.to_string()),
            other => panic!("expected a hole, got {other:?}"),
        }
    }

    #[test]
    fn compacted_segments_may_skip_raft_offsets_and_still_skip_their_aborted_transactions() {
        let (archive, expected, ..) = redpanda_archive("redpanda-compacted");
        let key = top_manifest_key(&archive, 0);
        let mut manifest = manifest_at(&archive, &key);
        let last = last_entry(&mut manifest);
        let old = fixture_key(&archive, 0, last);
        assert!(exists(&archive, &tx_key(&old)));
        let bytes = object(&archive, &old);
        let Transform::Redpanda(segment) = &block(RedpandaLayout.segments(&archive, "t", 0))
            .expect("lists")
            .last()
            .expect("segments")
            .transform
            .clone()
        else {
            panic!("a redpanda segment")
        };
        let kafka = kafka_batches(&segment.translate("s", &bytes).expect("translates").batches);
        // Config, 4 records, aborted transaction, config, its abort marker, a committed
        // transaction, its commit marker, 3 records.
        let walked = walk(&bytes);
        let kinds: Vec<i8> = walked.iter().map(|w| w.kind).collect();
        assert_eq!(kinds, [2, 1, 1, 2, 1, 1, 1, 1]);
        // Compaction removed the first data batch and the last: raft offsets skip one, and the
        // segment ends short of its committed offset.
        let (first, final_) = (kafka[0], kafka[kafka.len() - 1]);
        let compacted: Vec<u8> = walked
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 1 && i != walked.len() - 1)
            .flat_map(|(_, w)| bytes[w.pos..w.pos + w.size].to_vec())
            .collect();
        let gap_at = (walked[0].size + 8) as u64;
        last.size_bytes = compacted.len() as i64;
        last.is_compacted = true;
        // The name (format 3) holds the size: the object moves.
        let new = fixture_key(&archive, 0, last);
        rename(&archive, &old, &new);
        put(&archive, &new, compacted);
        put_manifest(&archive, &key, &manifest);
        let mut want = all(&expected);
        let removed = |o: i64| (first.0..=first.1).contains(&o) || (final_.0..=final_.1).contains(&o);
        let before = want[&0].len();
        want.get_mut(&0).expect("partition 0").retain(|r| !removed(r.offset));
        assert_eq!(want[&0].len(), before - 7);
        let source = crate::ReplaySource::open(archive.clone(), "t").expect("opens");
        assert_eq!(source.end_offsets()[&0], expected[0].1.last().expect("records").offset + 1, "the handoff stays");
        // The aborted transaction's records are still skipped: its `.tx` applies.
        assert_eq!(replay(&archive).expect("replays"), want);
        // The same bytes, not marked compacted: the gap is damage.
        last_entry(&mut manifest).is_compacted = false;
        put_manifest(&archive, &key, &manifest);
        match replay(&archive) {
            Err(Error::CorruptBatch { object, byte_offset, .. }) => {
                assert_eq!((object, byte_offset), (new.to_string(), gap_at));
            }
            other => panic!("expected the gap refused, got {other:?}"),
        }
    }
}
