//! Archive layouts: how object keys map to topics, partitions and offset ranges.
//!
//! Every layout answers two questions: which partitions of a topic the archive holds, and which
//! segments, in offset order, each partition has. Everything else (fetching, decoding, checking,
//! handing off to live) is shared.

mod kappa;
mod tansu;

use futures::future::BoxFuture;
use kappa_engine::Offset;
use object_store::path::Path;

pub use kappa::KappaLayout;
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
}

/// The key scheme of one platform's archives.
pub trait ArchiveLayout: Send + Sync {
    /// The layout's name, as `--layout` spells it.
    fn name(&self) -> &'static str;
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
pub const LAYOUTS: [&str; 2] = ["kappa", "tansu"];

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
    match (tops.contains(&"kappa"), tops.contains(&"clusters")) {
        (true, false) => Ok(std::sync::Arc::new(KappaLayout)),
        (false, true) => Ok(tansu()),
        (true, true) => Err(Error::InvalidUrl {
            url: url.to_string(),
            reason: "holds both a `kappa/` and a `clusters/` tree: choose one with --layout".into(),
        }),
        // Empty (or not yet written): Kappa's own layout, which `archive write` creates.
        (false, false) => Ok(std::sync::Arc::new(KappaLayout)),
    }
}
