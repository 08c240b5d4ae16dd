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
//!
//! This layout cannot tell a missing segment from offsets that compaction left without a record:
//! both are offsets between a segment's last batch and the next segment's base. Replay reads on;
//! `inspect` lists each such gap and says so.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::path::Path;

use super::{ArchiveLayout, Listing, SegmentRef};
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::segment::extent::{batch_extent, HEADER_LEN};
use crate::segment::AbortedTxn;

/// See the module documentation.
#[derive(Clone, Copy, Debug, Default)]
pub struct KafkaLogDirLayout;

/// Bytes of one `.txnindex` entry: version i16, producer id i64, first, last, last stable offset i64.
const TXN_ENTRY: usize = 34;

/// Parses a `.txnindex` object: whole 34-byte entries, each aborted transaction's first offset at
/// most its last.
pub fn parse_txn_index(object: &str, bytes: &[u8]) -> Result<Vec<AbortedTxn>> {
    let corrupt = |byte_offset: usize, reason: String| Error::CorruptMetadata {
        object: object.to_string(),
        byte_offset: byte_offset as u64,
        reason,
    };
    if !bytes.len().is_multiple_of(TXN_ENTRY) {
        return Err(corrupt(
            bytes.len() - bytes.len() % TXN_ENTRY,
            format!("transaction index of {} bytes is not a whole number of {TXN_ENTRY}-byte entries", bytes.len()),
        ));
    }
    let i64_at = |e: &[u8], at: usize| i64::from_be_bytes(e[at..at + 8].try_into().expect("8 bytes of an entry"));
    bytes
        .chunks_exact(TXN_ENTRY)
        .enumerate()
        .map(|(i, e)| {
            let txn = AbortedTxn { producer_id: i64_at(e, 2), first: i64_at(e, 10), last: i64_at(e, 18) };
            if txn.first < 0 || txn.last < txn.first {
                return Err(corrupt(
                    i * TXN_ENTRY + 10,
                    format!("aborted transaction spans offsets {}..={}", txn.first, txn.last),
                ));
            }
            Ok(txn)
        })
        .collect()
}

/// Encodes `.txnindex` entries (for fixtures).
pub fn encode_txn_index(aborted: &[AbortedTxn]) -> Vec<u8> {
    let mut out = Vec::with_capacity(aborted.len() * TXN_ENTRY);
    for a in aborted {
        out.extend(0i16.to_be_bytes());
        out.extend(a.producer_id.to_be_bytes());
        out.extend(a.first.to_be_bytes());
        out.extend(a.last.to_be_bytes());
        out.extend(a.last.saturating_add(1).to_be_bytes());
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

    fn cannot_tell_holes(&self) -> Option<&'static str> {
        Some(
            "the kafka-logdir layout cannot tell which: its segment files record no end offset, and compaction \
             legitimately leaves offsets with no record at a segment's end",
        )
    }

    fn list<'a>(&'a self, archive: &'a Archive, topic: &'a str, partition: i32) -> BoxFuture<'a, Result<Listing>> {
        async move {
            let dir = Self::dir(archive, topic, partition);
            let objects = archive.list_objects(&dir).await?;
            let mut logs = Vec::new();
            let mut aborted = Vec::new();
            for meta in &objects {
                let name = meta.location.filename().unwrap_or_default();
                if let Some(base) = name.strip_suffix(".log") {
                    let base = base.parse::<i64>().ok().filter(|b| *b >= 0).ok_or_else(|| Error::InvalidKey {
                        object: meta.location.to_string(),
                        reason: "not a log segment name ({base_offset:020}.log, base offset at least 0)".into(),
                    })?;
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
                // A segment ends where the next begins. Whether offsets between its last batch and
                // the next segment are a missing segment or compacted away, nothing here says
                // (see `cannot_tell_holes`): `inspect` notes such gaps.
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
            Ok(Listing { segments: out, holes: Vec::new() })
        }
        .boxed()
    }
}

/// The offset after the last batch of the log segment `key` (`size` bytes), by walking batch
/// headers: one 61-byte ranged read per batch, each header checked by
/// [`batch_extent`](crate::segment::extent::batch_extent).
async fn walk_to_end(archive: &Archive, key: &Path, size: u64) -> Result<i64> {
    let mut pos = 0u64;
    let mut next = None;
    while pos < size {
        let header = archive.fetch_range(key, pos..size.min(pos.saturating_add(HEADER_LEN as u64))).await?;
        let extent = batch_extent(key.as_ref(), &header, pos)?;
        let end = pos.checked_add(extent.total_len).filter(|&end| end <= size).ok_or_else(|| Error::CorruptBatch {
            object: key.to_string(),
            byte_offset: pos + 8,
            reason: format!("batch of {} bytes does not fit the {} bytes left", extent.total_len, size - pos),
        })?;
        next = Some(extent.next_offset);
        pos = end;
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
    use object_store::ObjectStoreExt;

    /// Writes `history()` as a log directory: three segments per partition, gzip and zstd batches,
    /// and in partition 1 a committed and an aborted transaction with their markers. Returns the
    /// records a read-committed reader sees, the segment to damage and a middle one to delete.
    fn write_logdir(archive: &Archive) -> (Vec<(i32, Vec<Record>)>, Path, Path) {
        let mut expected = Vec::new();
        let (mut victim, mut missing) = (None, None);
        for (p, records) in history() {
            let mut visible = Vec::new();
            let mut segments: Vec<(i64, Vec<u8>)> = vec![(records[0].offset, Vec::new())];
            let mut aborted = Vec::new();
            let mut offset_shift = 0;
            for (n, chunk) in records.chunks(6).enumerate() {
                if n == 2 || n == 4 {
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
                    if victim.is_some() {
                        missing.get_or_insert(key.clone());
                    }
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
        (expected, victim.expect("written"), missing.expect("written"))
    }

    #[test]
    fn kafka_logdir_layout_conforms_and_skips_aborted_transactions() {
        let archive = Archive::open("memory://conformance-logdir").expect("opens");
        let archive = Archive { layout: Arc::new(KafkaLogDirLayout), ..archive };
        let (expected, victim, missing) = write_logdir(&archive);
        let aborted_partition = &expected[1].1;
        assert!(aborted_partition.len() < history()[1].1.len(), "the fixture aborts some records");
        let summary = crate::inspect::summarize(&archive, "t").expect("summarizes");
        assert_eq!(summary.partitions[&1].aborted_batches, 1);
        assert_eq!(summary.partitions[&1].control_batches, 2);
        assert!(summary.transactions_note().expect("has transactions").contains("1 of aborted"));
        let detected = Archive::open_layout("memory://conformance-logdir", None, None).expect("opens");
        assert_eq!(detected.layout.name(), "kafka-logdir");
        check_layout(&archive, "t", &expected, &victim, &missing);
    }

    #[test]
    fn txn_index_round_trips_and_rejects_partial_or_backward_entries() {
        let entries = vec![AbortedTxn { producer_id: 3, first: 10, last: 20 }];
        assert_eq!(parse_txn_index("x", &encode_txn_index(&entries)).expect("parses"), entries);
        assert!(matches!(parse_txn_index("x", &[0; 33]), Err(Error::CorruptMetadata { byte_offset: 0, .. })));
        let two = encode_txn_index(&[entries[0], AbortedTxn { producer_id: 3, first: 30, last: 29 }]);
        assert!(matches!(parse_txn_index("x", &two), Err(Error::CorruptMetadata { byte_offset: 44, .. })));
        let max = encode_txn_index(&[AbortedTxn { producer_id: 1, first: i64::MAX, last: i64::MAX }]);
        assert_eq!(parse_txn_index("x", &max).expect("parses").len(), 1, "the encoder saturates, never overflows");
    }

    fn single_log(name: &str, log: &str, bytes: Vec<u8>) -> Result<Vec<SegmentRef>> {
        let archive = Archive::open(&format!("memory://{name}")).expect("opens");
        let archive = Archive { layout: Arc::new(KafkaLogDirLayout), ..archive };
        let key = archive.key(&format!("t-0/{log}"));
        crate::archive::runtime().block_on(archive.store.put(&key, bytes.into())).expect("put");
        crate::archive::runtime().block_on(KafkaLogDirLayout.segments(&archive, "t", 0))
    }

    #[test]
    fn a_batch_header_near_i64_max_names_object_and_byte_offset() {
        let mut bytes = Vec::new();
        let records: Vec<Record> = (0..2)
            .map(|o| Record { offset: o, timestamp: Some(o), key: None, value: Some(bytes::Bytes::from("v")) })
            .collect();
        crate::segment::encode_batch(&records, &mut bytes);
        let first_len = bytes.len() as u64;
        crate::segment::encode_batch(
            &records.iter().map(|r| Record { offset: r.offset + 2, ..r.clone() }).collect::<Vec<_>>(),
            &mut bytes,
        );
        // The second batch's base offset: i64::MAX − 1 plus its last offset delta 1 overflows.
        bytes[first_len as usize..first_len as usize + 8].copy_from_slice(&(i64::MAX - 1).to_be_bytes());
        let err = single_log("logdir-i64-max", "00000000000000000000.log", bytes).expect_err("refused");
        match &err {
            Error::CorruptBatch { object, byte_offset, .. } => {
                assert!(object.ends_with("00000000000000000000.log"), "{err}");
                assert_eq!(*byte_offset, first_len, "{err}");
            }
            other => panic!("expected CorruptBatch, got {other}"),
        }
    }

    #[test]
    fn log_names_that_are_not_offsets_are_named_errors() {
        for name in ["-0000000000000000001.log", "99999999999999999999.log"] {
            let err = single_log(&format!("logdir-key-{name}"), name, vec![0; 70]).expect_err("refused");
            assert!(matches!(&err, Error::InvalidKey { object, .. } if object.ends_with(name)), "{err}");
        }
    }
}
