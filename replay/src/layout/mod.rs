//! Archive layouts: how object keys map to topics, partitions and offset ranges.
//!
//! Every layout answers two questions: which partitions of a topic the archive holds, and which
//! segments, in offset order, each partition has. Everything else (fetching, decoding, checking,
//! handing off to live) is shared.

mod kappa;

use futures::future::BoxFuture;
use kappa_engine::Offset;
use object_store::path::Path;

pub use kappa::KappaLayout;

use crate::archive::Archive;
use crate::error::Result;

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
