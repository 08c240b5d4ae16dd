//! The layout a Tansu broker writes with `--storage-engine s3://BUCKET/`:
//!
//! ```text
//! {prefix}/clusters/{cluster}/meta.json
//! {prefix}/clusters/{cluster}/topics/{topic}/partitions/{partition:010}/watermark.json
//! {prefix}/clusters/{cluster}/topics/{topic}/partitions/{partition:010}/records/{base_offset:020}.batch
//! ```
//!
//! Each `.batch` object is one RecordBatch exactly as the producer sent it (so compressed with the
//! producer's codec), whose own base offset field is 0: the real base offset is the key's. A
//! segment's end is the next segment's base offset; the last segment's end is read from its batch
//! header (a 61-byte ranged read).

use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::{ArchiveLayout, SegmentRef};
use crate::archive::Archive;
use crate::error::{Error, Result};

/// See the module documentation.
#[derive(Clone, Debug, Default)]
pub struct TansuLayout {
    /// The cluster to read; `None` means the archive's only one.
    pub cluster: Option<String>,
}

impl TansuLayout {
    async fn cluster(&self, archive: &Archive) -> Result<String> {
        if let Some(c) = &self.cluster {
            return Ok(c.clone());
        }
        let dir = archive.key("clusters");
        let dirs = archive.list_dirs(&dir).await?;
        let clusters: Vec<String> = dirs;
        match clusters.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(Error::Inconsistent { object: dir.to_string(), reason: "holds no Tansu cluster".into() }),
            several => Err(Error::Inconsistent {
                object: dir.to_string(),
                reason: format!("holds several Tansu clusters ({}): choose one with --cluster", several.join(", ")),
            }),
        }
    }

    fn partition_dir(archive: &Archive, cluster: &str, topic: &str, partition: i32) -> Path {
        archive.key(&format!("clusters/{cluster}/topics/{topic}/partitions/{partition:010}/records"))
    }
}

impl ArchiveLayout for TansuLayout {
    fn name(&self) -> &'static str {
        "tansu"
    }

    fn partitions<'a>(&'a self, archive: &'a Archive, topic: &'a str) -> BoxFuture<'a, Result<Vec<i32>>> {
        async move {
            let cluster = self.cluster(archive).await?;
            let dir = archive.key(&format!("clusters/{cluster}/topics/{topic}/partitions"));
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
            let cluster = self.cluster(archive).await?;
            let dir = Self::partition_dir(archive, &cluster, topic, partition);
            let objects = archive.list_objects(&dir).await?;
            let mut found = Vec::new();
            for meta in objects {
                let name = meta.location.filename().unwrap_or_default();
                let Some(base) = name.strip_suffix(".batch").and_then(|b| b.parse::<i64>().ok()) else {
                    return Err(Error::Inconsistent {
                        object: meta.location.to_string(),
                        reason: "not a Tansu batch key ({base_offset:020}.batch)".into(),
                    });
                };
                found.push((base, meta));
            }
            found.sort_by_key(|(base, _)| *base);
            let mut out: Vec<SegmentRef> = Vec::with_capacity(found.len());
            for (i, (base, meta)) in found.iter().enumerate() {
                let next_offset = match found.get(i + 1) {
                    Some((next, _)) => *next,
                    None => base + last_offset_delta(archive, &meta.location).await? + 1,
                };
                if next_offset <= *base {
                    return Err(Error::Inconsistent {
                        object: meta.location.to_string(),
                        reason: format!("ends at offset {next_offset}, before it starts ({base})"),
                    });
                }
                out.push(SegmentRef {
                    key: meta.location.clone(),
                    base_offset: *base,
                    next_offset,
                    size: meta.size,
                    relative_offsets: true,
                    aborted: Default::default(),
                    transform: Default::default(),
                    note: None,
                });
            }
            Ok(out)
        }
        .boxed()
    }
}

/// The `lastOffsetDelta` field of the batch at the start of `key`.
async fn last_offset_delta(archive: &Archive, key: &Path) -> Result<i64> {
    let header = archive
        .store
        .get_range(key, 0..61)
        .await
        .map_err(|source| Error::ObjectStore { object: key.to_string(), source })?;
    let field: [u8; 4] = header.get(23..27).and_then(|b| b.try_into().ok()).ok_or_else(|| Error::CorruptBatch {
        object: key.to_string(),
        byte_offset: header.len() as u64,
        reason: "truncated: shorter than a batch header".into(),
    })?;
    let delta = i32::from_be_bytes(field);
    if delta < 0 {
        return Err(Error::CorruptBatch {
            object: key.to_string(),
            byte_offset: 23,
            reason: format!("negative last offset delta {delta}"),
        });
    }
    Ok(i64::from(delta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::conformance::{check_layout, history};
    use crate::segment::{encode_batch_with, Codec};
    use kappa_engine::Record;

    #[test]
    fn tansu_layout_conforms() {
        let archive = Archive::open_layout("memory://conformance-tansu", Some("tansu"), None).expect("opens");
        let mut victim = None;
        for (p, records) in history() {
            // One batch per object, offsets relative to the key, as Tansu writes them.
            for (n, chunk) in records.chunks(7).enumerate() {
                let base = chunk[0].offset;
                let relative: Vec<Record> =
                    chunk.iter().map(|r| Record { offset: r.offset - base, ..r.clone() }).collect();
                let mut bytes = Vec::new();
                encode_batch_with(&relative, if n % 2 == 0 { Codec::Zstd } else { Codec::None }, &mut bytes);
                let key = archive.key(&format!("clusters/c1/topics/t/partitions/{p:010}/records/{base:020}.batch"));
                crate::archive::runtime().block_on(archive.store.put(&key, bytes.into())).expect("put");
                victim.get_or_insert(key);
            }
        }
        check_layout(&archive, "t", &history(), &victim.expect("written"));
        // Detection by keys.
        let detected = Archive::open_layout("memory://conformance-tansu", None, None).expect("opens");
        assert_eq!(detected.layout.name(), "tansu");
    }
}
