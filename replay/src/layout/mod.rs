//! Archive layouts: how object keys map to topics, partitions and offset ranges.
//!
//! Every layout answers two questions: which partitions of a topic the archive holds, and which
//! segments, in offset order, each partition has. Everything else (fetching, decoding, checking,
//! handing off to live) is shared.

#[cfg(test)]
pub(crate) mod conformance;
#[cfg(feature = "iceberg")]
pub mod iceberg;
mod kafka_logdir;
mod kappa;
mod kip405;
pub mod redpanda;
pub mod remote_log_metadata;
mod tansu;

use futures::future::BoxFuture;
use futures::FutureExt;
use kappa_engine::Offset;
use object_store::path::Path;

pub use kafka_logdir::{encode_txn_index, parse_txn_index, KafkaLogDirLayout};
pub use kappa::KappaLayout;
pub use kip405::{decode_variable_sizes, offset_index_last, Chunks, IndexRange, Kip405Layout, Manifest, SizeList};
pub use redpanda::{RedpandaLayout, RedpandaSegment};
pub use tansu::TansuLayout;

use crate::archive::Archive;
use crate::error::{Error, Result};

/// One segment object of a partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRef {
    /// The object's key.
    pub key: Path,
    /// Offset of its first record.
    pub base_offset: Offset,
    /// Offset after its last record, where the key says.
    pub next_offset: Offset,
    /// Size in bytes.
    pub size: u64,
    /// Whether the batches inside carry offsets relative to `base_offset` (Tansu) rather than
    /// absolute ones.
    pub relative_offsets: bool,
    /// Aborted transactions of the partition, where the layout records them.
    pub aborted: std::sync::Arc<Vec<crate::segment::AbortedTxn>>,
    /// How the object's bytes turn into the segment's batches.
    pub transform: Transform,
    /// Something `inspect` should say about this segment (a choice among uploads, say).
    pub note: Option<String>,
}

/// How a segment object's bytes turn into RecordBatches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Transform {
    /// The object is the batches.
    #[default]
    None,
    /// Chunked and transformed by a remote storage manager (KIP-405).
    Chunked(std::sync::Arc<Chunks>),
    /// As `inner`, and the batches must reach the segment's end: the layout's offsets have no
    /// legitimate gaps, so batches that end early mean the next object is missing.
    MustReach(std::sync::Arc<MustReach>),
    /// Redpanda's batches, translated to Kafka's (offsets, headers) with their aborted
    /// transactions.
    Redpanda(std::sync::Arc<RedpandaSegment>),
    /// One partition's rows of Iceberg data files, as Kafka batches.
    #[cfg(feature = "iceberg")]
    Iceberg(std::sync::Arc<iceberg::IcebergSegment>),
}

/// The check of [`Transform::MustReach`]: where a segment's batches must end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MustReach {
    /// The transform of the object's bytes.
    pub inner: Transform,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The segment's base offset (where the first batch's offsets are counted from, if relative).
    pub base_offset: Offset,
    /// Whether the batches carry offsets relative to `base_offset` (Tansu).
    pub relative: bool,
    /// Where the batches must end: the next object's base offset.
    pub next_offset: Offset,
    /// The next object's key.
    pub next_object: String,
}

impl Transform {
    /// The batches of `bytes`, the object `object`.
    pub fn apply(&self, object: &str, bytes: &bytes::Bytes) -> Result<bytes::Bytes> {
        Ok(self.apply_with_aborts(object, bytes)?.0)
    }

    /// As [`Transform::apply`], with the aborted transactions only the bytes show (in Kafka
    /// offsets), where the layout finds them there.
    pub fn apply_with_aborts(
        &self,
        object: &str,
        bytes: &bytes::Bytes,
    ) -> Result<(bytes::Bytes, Vec<crate::segment::AbortedTxn>)> {
        match self {
            Transform::Redpanda(segment) => {
                let translated = segment.translate(object, bytes)?;
                Ok((translated.batches, translated.aborted))
            }
            #[cfg(feature = "iceberg")]
            Transform::Iceberg(segment) => Ok((segment.translate(object, bytes)?, Vec::new())),
            other => Ok((other.apply_plain(object, bytes)?, Vec::new())),
        }
    }

    fn apply_plain(&self, object: &str, bytes: &bytes::Bytes) -> Result<bytes::Bytes> {
        match self {
            Transform::Redpanda(_) => Ok(self.apply_with_aborts(object, bytes)?.0),
            #[cfg(feature = "iceberg")]
            Transform::Iceberg(_) => Ok(self.apply_with_aborts(object, bytes)?.0),
            Transform::None => Ok(bytes.clone()),
            Transform::Chunked(chunks) => chunks.untransform(object, bytes),
            Transform::MustReach(check) => {
                let plain = check.inner.apply(object, bytes)?;
                check.verify(object, &plain)?;
                Ok(plain)
            }
        }
    }

    /// This transform without its end check (for `verify`, which reports a hole and still reads
    /// the segment before it).
    pub fn without_end_check(&self) -> Transform {
        match self {
            Transform::MustReach(check) => check.inner.without_end_check(),
            other => other.clone(),
        }
    }
}

impl MustReach {
    /// [`Error::ArchiveHole`] if the batches of `plain` end before `next_offset`. Damaged bytes
    /// pass: the decoder that reads them next names the damage better than a hole would.
    fn verify(&self, object: &str, plain: &[u8]) -> Result<()> {
        use crate::segment::extent::walk_batches;
        let Ok(Some(walk)) = walk_batches(object, plain, 0, false) else { return Ok(()) };
        let end = if self.relative {
            walk.next_offset.checked_sub(walk.first_base).and_then(|span| self.base_offset.checked_add(span))
        } else {
            Some(walk.next_offset)
        };
        match end {
            Some(end) if end < self.next_offset && walk_batches(object, plain, 0, true).is_ok() => {
                Err(Error::ArchiveHole {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    expected_offset: end,
                    found_offset: self.next_offset,
                    object: self.next_object.clone(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Offsets of a partition that no object holds although the layout shows some object must.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hole {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The first missing offset: where the objects before the hole end.
    pub expected_offset: Offset,
    /// Where the objects go on.
    pub found_offset: Offset,
    /// The object that starts at `found_offset`.
    pub object: String,
}

impl From<Hole> for Error {
    fn from(hole: Hole) -> Self {
        let Hole { topic, partition, expected_offset, found_offset, object } = hole;
        Error::ArchiveHole { topic, partition, expected_offset, found_offset, object }
    }
}

impl Hole {
    /// The hole an [`Error::ArchiveHole`] describes.
    pub fn from_error(error: &Error) -> Option<Hole> {
        match error {
            Error::ArchiveHole { topic, partition, expected_offset, found_offset, object } => Some(Hole {
                topic: topic.clone(),
                partition: *partition,
                expected_offset: *expected_offset,
                found_offset: *found_offset,
                object: object.clone(),
            }),
            _ => None,
        }
    }
}

/// One partition's segments as a layout lists them, and the holes the listing alone shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// The segments, in offset order, not overlapping.
    pub segments: Vec<SegmentRef>,
    /// Offsets between segments that some missing object held.
    pub holes: Vec<Hole>,
}

/// The key scheme of one platform's archives.
///
/// A missing object in the middle of an archive must not go unnoticed: replay would drop its
/// records silently. A layout that can tell a missing object from a legitimate gap in offsets
/// (transaction markers, compaction) reports it as [`Error::ArchiveHole`], from its listing
/// ([`Listing::holes`], refused by [`ArchiveLayout::segments`]) or, when only the bytes show it,
/// while reading ([`Transform::MustReach`]). A layout that cannot says why in
/// [`ArchiveLayout::cannot_tell_holes`], and `inspect` says so beside every gap it sees.
pub trait ArchiveLayout: Send + Sync {
    /// The layout's name, as `--layout` spells it.
    fn name(&self) -> &'static str;
    /// Whether the layout records aborted transactions (so their records can be skipped).
    fn carries_aborts(&self) -> bool {
        false
    }
    /// Why this layout cannot tell a missing object from a legitimate gap in offsets, if it
    /// cannot; `None` when it refuses every hole it can see.
    fn cannot_tell_holes(&self) -> Option<&'static str> {
        None
    }
    /// This layout, replaying a table that may have lost records with a warning instead of
    /// refusing it; `None` where the layout has no such tables.
    fn allowing_lossy(&self) -> Option<std::sync::Arc<dyn ArchiveLayout>> {
        None
    }
    /// The partitions of `topic` the archive holds, sorted.
    fn partitions<'a>(&'a self, archive: &'a Archive, topic: &'a str) -> BoxFuture<'a, Result<Vec<i32>>>;
    /// The segments of one partition, in offset order, not overlapping, with the holes between
    /// them that the listing shows.
    fn list<'a>(&'a self, archive: &'a Archive, topic: &'a str, partition: i32) -> BoxFuture<'a, Result<Listing>>;
    /// The segments of one partition, in offset order, not overlapping; a hole the listing shows
    /// is an [`Error::ArchiveHole`].
    fn segments<'a>(
        &'a self,
        archive: &'a Archive,
        topic: &'a str,
        partition: i32,
    ) -> BoxFuture<'a, Result<Vec<SegmentRef>>> {
        async move {
            let Listing { segments, holes } = self.list(archive, topic, partition).await?;
            match holes.into_iter().next() {
                Some(hole) => Err(hole.into()),
                None => Ok(segments),
            }
        }
        .boxed()
    }
}

/// The layouts `--layout` accepts (`iceberg` only in a build with the `iceberg` feature; without
/// it, choosing it is an error that says how to build one).
pub const LAYOUTS: [&str; 6] = ["kappa", "tansu", "kafka-logdir", "kip405", "redpanda", "iceberg"];

/// The bytes of `segment`: its object, or for a segment of several objects (an Iceberg segment
/// whose data files' offsets interleave) all of them, framed.
pub(crate) async fn fetch_segment(store: &dyn object_store::ObjectStore, segment: &SegmentRef) -> Result<bytes::Bytes> {
    #[cfg(feature = "iceberg")]
    if let Transform::Iceberg(iceberg) = &segment.transform {
        return iceberg::fetch(store, iceberg).await;
    }
    crate::archive::get_bytes(store, &segment.key).await
}

/// The error for `--layout iceberg` in a build without the `iceberg` feature.
#[cfg(not(feature = "iceberg"))]
fn iceberg_not_built(url: &str) -> Error {
    Error::InvalidUrl {
        url: url.to_string(),
        reason: "this kappa was built without Iceberg support: build it with the `iceberg` feature (cargo install \
                 --path examples --features iceberg, or cargo run --release --features iceberg -- ...)"
            .into(),
    }
}

/// Picks the layout of an archive: the one named, or the one its top-level keys show.
///
/// `cluster` selects a Tansu cluster when the archive holds several.
pub(crate) async fn choose(
    store: &dyn object_store::ObjectStore,
    prefix: &Path,
    url: &str,
    name: Option<&str>,
    cluster: Option<&str>,
    metadata_file: Option<String>,
) -> Result<std::sync::Arc<dyn ArchiveLayout>> {
    let tansu = || std::sync::Arc::new(TansuLayout { cluster: cluster.map(String::from) });
    #[cfg(not(feature = "iceberg"))]
    let _ = metadata_file;
    match name {
        Some("kappa") => return Ok(std::sync::Arc::new(KappaLayout)),
        Some("tansu") => return Ok(tansu()),
        Some("kafka-logdir") => return Ok(std::sync::Arc::new(KafkaLogDirLayout)),
        Some("kip405") => return Ok(std::sync::Arc::new(Kip405Layout::default())),
        Some("redpanda") => return Ok(std::sync::Arc::new(RedpandaLayout)),
        #[cfg(feature = "iceberg")]
        Some("iceberg") => return Ok(std::sync::Arc::new(iceberg::IcebergLayout::new(metadata_file, false))),
        #[cfg(not(feature = "iceberg"))]
        Some("iceberg") => return Err(iceberg_not_built(url)),
        Some(other) => {
            return Err(Error::InvalidUrl {
                url: url.to_string(),
                reason: format!("unknown layout `{other}`; known: {}", LAYOUTS.join(", ")),
            })
        }
        None => {}
    }
    let listing = store
        .list_with_delimiter(Some(prefix))
        .await
        .map_err(|source| Error::ObjectStore { object: prefix.to_string(), source })?;
    let tops: Vec<&str> = listing.common_prefixes.iter().filter_map(|p| p.filename()).collect();
    // A Kafka log directory has `{topic}-{partition}` directories (and no `kappa/`, `clusters/`).
    let logdir = tops.iter().any(|t| t.rsplit_once('-').is_some_and(|(_, p)| p.parse::<u32>().is_ok()));
    // KIP-405 uploads sit under `{topic}-{topicId}`.
    let kip405 = tops.iter().any(|t| kip405::strip_topic_id(t).is_some());
    // Redpanda's keys start with hash prefixes (`a0000000`, `3f2c91d7`), or from v24.2 with `meta`
    // and cluster UUIDs (which would also pass for KIP-405 topic ids).
    if redpanda::looks_like(&tops) && !tops.contains(&"kappa") && !tops.contains(&"clusters") {
        return Ok(std::sync::Arc::new(RedpandaLayout));
    }
    // An Iceberg table's location has `metadata/` (and usually `data/`).
    if tops.contains(&"metadata") && !tops.contains(&"meta") && !logdir && !kip405 {
        #[cfg(feature = "iceberg")]
        return Ok(std::sync::Arc::new(iceberg::IcebergLayout::new(metadata_file, false)));
        #[cfg(not(feature = "iceberg"))]
        return Err(iceberg_not_built(url));
    }
    match (tops.contains(&"kappa"), tops.contains(&"clusters"), logdir, kip405) {
        (true, false, false, false) => Ok(std::sync::Arc::new(KappaLayout)),
        (false, true, false, false) => Ok(tansu()),
        (false, false, true, false) => Ok(std::sync::Arc::new(KafkaLogDirLayout)),
        (false, false, false, true) => Ok(std::sync::Arc::new(Kip405Layout::default())),
        // Empty (or not yet written): Kappa's own layout, which `archive write` creates.
        (false, false, false, false) => Ok(std::sync::Arc::new(KappaLayout)),
        _ => Err(Error::InvalidUrl {
            url: url.to_string(),
            reason: format!("its top-level keys ({}) fit several layouts: choose one with --layout", tops.join(", ")),
        }),
    }
}

#[cfg(all(test, not(feature = "iceberg")))]
mod without_the_iceberg_feature {
    #[test]
    fn choosing_iceberg_says_how_to_build_it() {
        let error = crate::Archive::open_layout("memory://no-iceberg", Some("iceberg"), None).expect_err("not built");
        assert!(error.to_string().contains("--features iceberg"), "{error}");
    }
}
