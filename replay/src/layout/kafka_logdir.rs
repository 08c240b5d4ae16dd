//! A Kafka broker's log directory, or a copy of it (`log.dirs`, synced to object storage):
//!
//! ```text
//! {prefix}/{topic}-{partition}/{base_offset:020}.log        batches with absolute offsets
//! {prefix}/{topic}-{partition}/{base_offset:020}.index      offset index (not needed to replay)
//! {prefix}/{topic}-{partition}/{base_offset:020}.timeindex  time index (not needed to replay)
//! {prefix}/{topic}-{partition}/{base_offset:020}.txnindex   aborted transactions
//! ```
//!
//! Aborted transactions are read from every `.txnindex` of the partition (an abort's entry sits
//! in the segment holding its marker, while its data may lie in earlier segments), and their
//! batches are skipped, as a `read_committed` consumer would. A segment ends where the next one
//! begins; the last one's end is found by walking its batch headers (61-byte ranged reads).

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::{ArchiveLayout, SegmentRef};
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::segment::AbortedTxn;

/// See the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaLogDirLayout;

/// Bytes of one `.txnindex` entry: version i16, producer id i64, first, last, last stable offset i64.
const TXN_ENTRY: usize = 34;

/// Parses a `.txnindex` object.
pub fn parse_txn_index(object: &str, bytes: &[u8]) -> Result<Vec<AbortedTxn>> {
    if !bytes.len().is_multiple_of(TXN_ENTRY) {
        return Err(Error::CorruptBatch {
            object: object.to_string(),
            byte_offset: (bytes.len() - bytes.len() % TXN_ENTRY) as u64,
            reason: format!(
                "transaction index of {} bytes is not a whole number of {TXN_ENTRY}-byte entries",
                bytes.len()
            ),
        });
    }
    let i64_at = |e: &[u8], at: usize| i64::from_be_bytes(e[at..at + 8].try_into().expect("8 bytes"));
    Ok(bytes
        .chunks_exact(TXN_ENTRY)
        .map(|e| AbortedTxn { producer_id: i64_at(e, 2), first: i64_at(e, 10), last: i64_at(e, 18) })
        .collect())
}

/// Encodes `.txnindex` entries (for fixtures).
pub fn encode_txn_index(aborted: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(aborted.len() * TXN_ENTRY);
    for a in aborted {
        out.extend(0i16.to_be_bytes());
        out.extend(a.producer_id.to_be_bytes());
        out.extend(a.first.to_be_bytes());
        out.extend(a.last.to_be_bytes());
        out.extend((a.last + 1).to_be_bytes());
    }
    out
}

impl KafkaLogDirLayout {
    fn dir(archive: &Archive, topic: &str, partition: i32) -> Path {
        archive.key(&format!("{topic}-{partition}"))
    }
}

impl ArchiveLayout for KafkaLogDirLayout {
    fn name(&self) -> &'static str {
        "kafka-logdir"
    }

    fn carries_aborts(&self) -> bool {
        true
    }

    fn partitions<'a>(&'a self, archive: &'a Archive, topic: &'a str) -> BoxFuture<'a, Result<Vec<i32>>> {
        async move {
            let dirs = archive.list_dirs(&archive.prefix).await?;
            let mut out: Vec<i32> = dirs
                .iter()
                .filter_map(|name| {
                    let (t, partition) = name.rsplit_once('-')?;
                    (t == topic).then(|| partition.parse().ok()).flatten()
                })
                .collect();
            out.sort();
            Ok(out)
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
            let dir = Self::dir(archive, topic, partition);
            let objects = archive.list_objects(&dir).await?;
            let mut logs = Vec::new();
            let mut aborted = Vec::new();
            for meta in &objects {
                let name = meta.location.filename().unwrap_or_default();
                if let Some(base) = name.strip_suffix(".log").and_then(|b| b.parse::<i64>().ok()) {
                    if meta.size > 0 {
                        logs.push((base, meta.clone()));
                    }
                } else if name.ends_with(".txnindex") {
                    let bytes = archive.fetch(&meta.location).await?;
                    aborted.extend(parse_txn_index(meta.location.as_ref(), &bytes)?);
                }
            }
            aborted.sort();
            let aborted = Arc::new(aborted);
            logs.sort_by_key(|(base, _)| *base);
            let mut out = Vec::with_capacity(logs.len());
            for (i, (base, meta)) in logs.iter().enumerate() {
                let next_offset = match logs.get(i + 1) {
                    Some((next, _)) => *next,
                    None => walk_to_end(archive, &meta.location, meta.size).await?,
                };
                out.push(SegmentRef {
                    key: meta.location.clone(),
                    base_offset: *base,
                    next_offset,
                    size: meta.size,
                    relative_offsets: false,
                    aborted: aborted.clone(),
                    transform: Default::default(),
                    note: None,
                });
            }
            Ok(out)
        }
        .boxed()
    }
}

/// The offset after the last batch of the log segment `key`, by walking batch headers.
async fn walk_to_end(archive: &Archive, key: &Path, size: u64) -> Result<i64> {
    let mut pos = 0u64;
    let mut next = None;
    while pos + 61 <= size {
        let header = archive
            .store
            .get_range(key, pos..pos + 61)
            .await
            .map_err(|source| Error::ObjectStore { object: key.to_string(), source })?;
        let base = i64::from_be_bytes(header[0..8].try_into().expect("8 bytes"));
        let len = i32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
        let delta = i32::from_be_bytes(header[23..27].try_into().expect("4 bytes"));
        if len < 49 || delta < 0 {
            return Err(Error::CorruptBatch {
                object: key.to_string(),
                byte_offset: pos + 8,
                reason: format!("batch length {len} or last offset delta {delta} is impossible"),
            });
        }
        next = Some(base + i64::from(delta) + 1);
        pos += 12 + len as u64;
    }
    next.ok_or_else(|| Error::CorruptBatch {
        object: key.to_string(),
        byte_offset: 0,
        reason: "holds no complete record batch".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::conformance::{check_layout, history};
    use crate::segment::{control_record, encode_batch_full, BatchOptions, Codec};
    use kappa_engine::Record;

    /// Writes `history()` as a log directory: two segments per partition, gzip and zstd batches,
    /// and in partition 1 a committed and an aborted transaction with their markers. Returns the
    /// records a read-committed reader sees.
    fn write_logdir(archive: &Archive) -> (Vec<(i32, Vec<Record>)>, Path) {
        let mut expected = Vec::new();
        let mut victim = None;
        for (p, records) in history() {
            let mut visible = Vec::new();
            let mut segments: Vec<(i64, Vec<u8>)> = vec![(records[0].offset, Vec::new())];
            let mut aborted = Vec::new();
            let mut offset_shift = 0;
            for (n, chunk) in records.chunks(6).enumerate() {
                if n == 4 {
                    segments.push((chunk[0].offset + offset_shift, Vec::new()));
                }
                let chunk: Vec<Record> =
                    chunk.iter().map(|r| Record { offset: r.offset + offset_shift, ..r.clone() }).collect();
                let out = &mut segments.last_mut().expect("a segment").1;
                let codec = if n % 2 == 0 { Codec::Gzip } else { Codec::Zstd };
                let txn = p == 1 && (n == 2 || n == 5);
                let options = BatchOptions {
                    codec,
                    producer_id: if txn { 7 + n as i64 } else { -1 },
                    transactional: txn,
                    control: false,
                };
                encode_batch_full(&chunk, &options, out);
                visible.extend(chunk.iter().cloned());
                if txn {
                    // The marker takes one offset; every later record moves up by one.
                    let marker_offset = chunk[chunk.len() - 1].offset + 1;
                    let commit = n == 2;
                    let marker = control_record(marker_offset, 0, commit);
                    let control = BatchOptions { control: true, ..options };
                    encode_batch_full(&[marker], &control, out);
                    offset_shift += 1;
                    if !commit {
                        // Abort: the batch is not visible, and `.txnindex` says so.
                        visible.truncate(visible.len() - chunk.len());
                        aborted.push(AbortedTxn {
                            producer_id: options.producer_id,
                            first: chunk[0].offset,
                            last: marker_offset,
                        });
                    }
                }
            }
            for (base, bytes) in &segments {
                let key = archive.key(&format!("t-{p}/{base:020}.log"));
                crate::archive::runtime().block_on(archive.store.put(&key, bytes.clone().into())).expect("put");
                let index = archive.key(&format!("t-{p}/{base:020}.index"));
                crate::archive::runtime().block_on(archive.store.put(&index, Vec::new().into())).expect("put");
                if p == 0 {
                    victim.get_or_insert(key);
                }
            }
            let last_base = segments.last().expect("segments").0;
            let txn_key = archive.key(&format!("t-{p}/{last_base:020}.txnindex"));
            crate::archive::runtime()
                .block_on(archive.store.put(&txn_key, encode_txn_index(&aborted).into()))
                .expect("put");
            expected.push((p, visible));
        }
        (expected, victim.expect("written"))
    }

    #[test]
    fn kafka_logdir_layout_conforms_and_skips_aborted_transactions() {
        let archive = Archive::open("memory://conformance-logdir").expect("opens");
        let archive = Archive { layout: Arc::new(KafkaLogDirLayout), ..archive };
        let (expected, victim) = write_logdir(&archive);
        let aborted_partition = &expected[1].1;
        assert!(aborted_partition.len() < history()[1].1.len(), "the fixture aborts some records");
        let summary = crate::inspect::summarize(&archive, "t").expect("summarizes");
        assert_eq!(summary.partitions[&1].aborted_batches, 1);
        assert_eq!(summary.partitions[&1].control_batches, 2);
        assert!(summary.transactions_note().expect("has transactions").contains("1 of aborted"));
        let detected = Archive::open_layout("memory://conformance-logdir", None, None).expect("opens");
        assert_eq!(detected.layout.name(), "kafka-logdir");
        check_layout(&archive, "t", &expected, &victim);
    }

    #[test]
    fn txn_index_round_trips_and_rejects_partial_entries() {
        let entries = vec![AbortedTxn { producer_id: 3, first: 10, last: 20 }];
        assert_eq!(parse_txn_index("x", &encode_txn_index(&entries)).expect("parses"), entries);
        assert!(parse_txn_index("x", &[0; 33]).is_err());
    }
}
