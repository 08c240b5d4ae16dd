//! Archive layouts: how object keys map to topics, partitions and offset ranges.
//!
//! Every layout answers two questions: which partitions of a topic the archive holds, and which
//! segments, in offset order, each partition has. Everything else (fetching, decoding, checking,
//! handing off to live) is shared.

#[cfg(test)]
pub(crate) mod conformance;
mod kafka_logdir;
mod kappa;
mod kip405;
mod tansu;

use futures::future::BoxFuture;
use kappa_engine::Offset;
use object_store::path::Path;

pub use kafka_logdir::{encode_txn_index, parse_txn_index, KafkaLogDirLayout};
pub use kappa::KappaLayout;
pub use kip405::{Chunks, Kip405Layout, Manifest};
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
}

impl Transform {
    /// The batches of `bytes`, the object `object`.
    pub fn apply(&self, object: &str, bytes: &bytes::Bytes) -> Result<bytes::Bytes> {
        match self {
            Transform::None => Ok(bytes.clone()),
            Transform::Chunked(chunks) => chunks.untransform(object, bytes),
        }
    }
}

/// The key scheme of one platform's archives.
pub trait ArchiveLayout: Send + Sync {
    /// The layout's name, as `--layout` spells it.
    fn name(&self) -> &'static str;
    /// Whether the layout records aborted transactions (so their records can be skipped).
    fn carries_aborts(&self) -> bool {
        false
    }
    /// The partitions of `topic` the archive holds, sorted.
    fn partitions<'a>(&'a self, archive: &'a Archive, topic: &'a str) -> BoxFuture<'a, Result<Vec<i32>>>;
    /// The segments of one partition, in offset order, not overlapping.
    fn segments<'a>(
        &'a self,
        archive: &'a Archive,
        topic: &'a str,
        partition: i32,
    ) -> BoxFuture<'a, Result<Vec<SegmentRef>>>;
}

/// The layouts `--layout` accepts.
pub const LAYOUTS: [&str; 4] = ["kappa", "tansu", "kafka-logdir", "kip405"];

/// Picks the layout of an archive: the one named, or the one its top-level keys show.
///
/// `cluster` selects a Tansu cluster when the archive holds several.
pub(crate) async fn choose(
    store: &dyn object_store::ObjectStore,
    prefix: &Path,
    url: &str,
    name: Option<&str>,
    cluster: Option<&str>,
) -> Result<std::sync::Arc<dyn ArchiveLayout>> {
    let tansu = || std::sync::Arc::new(TansuLayout { cluster: cluster.map(String::from) });
    match name {
        Some("kappa") => return Ok(std::sync::Arc::new(KappaLayout)),
        Some("tansu") => return Ok(tansu()),
        Some("kafka-logdir") => return Ok(std::sync::Arc::new(KafkaLogDirLayout)),
        Some("kip405") => return Ok(std::sync::Arc::new(Kip405Layout)),
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
    match (tops.contains(&"kappa"), tops.contains(&"clusters"), logdir, kip405) {
        (true, false, false, false) => Ok(std::sync::Arc::new(KappaLayout)),
        (false, true, false, false) => Ok(tansu()),
        (false, false, true, false) => Ok(std::sync::Arc::new(KafkaLogDirLayout)),
        (false, false, false, true) => Ok(std::sync::Arc::new(Kip405Layout)),
        // Empty (or not yet written): Kappa's own layout, which `archive write` creates.
        (false, false, false, false) => Ok(std::sync::Arc::new(KappaLayout)),
        _ => Err(Error::InvalidUrl {
            url: url.to_string(),
            reason: format!("its top-level keys ({}) fit several layouts: choose one with --layout", tops.join(", ")),
        }),
    }
}
