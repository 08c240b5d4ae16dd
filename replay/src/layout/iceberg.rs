//! Iceberg topics: a topic's history kept as an Apache Iceberg table, one row per record with its
//! partition and offset, as Redpanda, AutoMQ and Aiven write them (`--layout iceberg`, built with
//! the `iceberg` feature).
//!
//! The archive URL is the table's location (the directory holding `metadata/` and `data/`), or a
//! metadata file inside it (`.../metadata/v3.metadata.json`). Without a metadata file named, the
//! table's metadata is `metadata/version-hint.text`'s (a filesystem catalog), else the listed
//! metadata file with the highest version number; `inspect` names the one read, and its snapshot.
//!
//! The spec's objects (metadata JSON, manifest lists and manifests in Avro) are parsed by the
//! `iceberg` crate from bytes; every byte is fetched through our `object_store`, so `file://`,
//! `s3://` and `memory://` work as for every other layout. Data files are Parquet, read with
//! `parquet`'s Arrow reader, columns found by Iceberg field id (renames do not matter).
//!
//! # Mapping a table to a topic
//! [`MAPPINGS`] has one line per vendor: which fields hold the partition, offset, timestamp, key
//! and value. The first whose partition and offset fields the current schema has is used.
//!
//! # Segments
//! A data file holds any partitions' records, in any order, and a partition's records may be spread
//! over several files whose offset ranges interleave (a table partitioned by hour of a timestamp
//! that goes back and forth). Per partition, data files whose offset ranges (from the manifest's
//! column bounds, or read from the file when its bounds span partitions) overlap form one segment;
//! a segment's rows are merged in offset order, duplicates refused, and handed to the shared
//! decoder as Kafka batches. A segment ends where the next begins, the last at `max(offset) + 1`:
//! offsets of transaction markers and aborted records are absent from these tables, so gaps are
//! legitimate, and the handoff continues at `max(offset) + 1` per partition.
//!
//! # What cannot be exact
//! Kappa replays bytes. A table whose value is reshaped into columns (Redpanda's schema modes,
//! AutoMQ's value fields, Aiven's structured `value`) cannot give the record's bytes back and is
//! refused. A table that may have lost records (rows deleted or overwritten by a snapshot, delete
//! files, upsert identifier fields, properties that let invalid records be dropped) is refused by
//! default, and replayed as it is with a warning when the user allows it
//! ([`IcebergLayout::allow_lossy`], `--allow-lossy-table`); `inspect` says which.
//!
//! # Damage
//! A data file must have the size and row count its manifest says; Parquet page checksums are
//! checked where the writer wrote them. A damaged file is an error naming it and the byte offset
//! of the row group (or footer) that failed. Without page checksums, a flipped byte inside a page
//! may decode to a different value: `inspect` says when a table's files carry none.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use iceberg::spec::{
    DataContentType, DataFileFormat, FormatVersion, Manifest, ManifestContentType, ManifestList, ManifestStatus,
    Operation, PrimitiveLiteral, PrimitiveType, TableMetadata, Type,
};
use kappa_engine::{Offset, Record};
use object_store::path::Path;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;

use super::{ArchiveLayout, Hole, Listing, SegmentRef, Transform};
use crate::archive::Archive;
use crate::error::{Error, Result};
use crate::segment::encode_batch;

/// Which fields of a vendor's table hold a record's parts (dotted paths into the schema).
#[derive(Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The vendor, as `inspect` names it.
    pub vendor: &'static str,
    /// The Kafka partition (int).
    pub partition: &'static str,
    /// The offset (long).
    pub offset: &'static str,
    /// The record's timestamp (timestamp or timestamptz, or long milliseconds).
    pub timestamp: &'static str,
    /// The key (binary).
    pub key: &'static str,
    /// The value's bytes (binary): the first of these the schema has.
    pub value: &'static [&'static str],
}

/// One line per vendor: Redpanda's `key_value` mode, AutoMQ's Table Topic, Aiven's Iceberg remote
/// storage manager.
pub const MAPPINGS: [Mapping; 3] = [
    Mapping {
        vendor: "redpanda",
        partition: "redpanda.partition",
        offset: "redpanda.offset",
        timestamp: "redpanda.timestamp",
        key: "redpanda.key",
        value: &["value"],
    },
    Mapping {
        vendor: "automq",
        partition: "_kafka_metadata.partition",
        offset: "_kafka_metadata.offset",
        timestamp: "_kafka_metadata.timestamp",
        key: "_kafka_key",
        value: &["_kafka_value"],
    },
    Mapping {
        vendor: "aiven",
        partition: "kafka.partition",
        offset: "kafka.offset",
        timestamp: "kafka.timestamp",
        key: "key_raw",
        value: &["value_raw", "value"],
    },
];

/// See the module documentation.
#[derive(Debug, Default)]
pub struct IcebergLayout {
    /// The metadata file to read (relative to the table location, e.g. `metadata/v3.metadata.json`);
    /// `None`: the version hint's, else the newest listed.
    pub metadata_file: Option<String>,
    /// Replay a table that may have lost records (with a warning) instead of refusing it.
    pub allow_lossy: bool,
    table: tokio::sync::OnceCell<Arc<Table>>,
}

impl IcebergLayout {
    /// The layout reading `metadata_file` (or the current one), refusing lossy tables unless
    /// `allow_lossy`.
    pub fn new(metadata_file: Option<String>, allow_lossy: bool) -> IcebergLayout {
        IcebergLayout { metadata_file, allow_lossy, table: tokio::sync::OnceCell::new() }
    }
}

/// Field ids of the mapped columns, and how to read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns {
    partition: i32,
    offset: i32,
    timestamp: Option<i32>,
    key: Option<i32>,
    value: i32,
}

/// One data file of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRef {
    /// Its key in the store.
    pub key: Path,
    /// Its size, as its manifest says.
    pub size: u64,
    /// Its row count, as its manifest says.
    pub rows: u64,
    /// Per partition, its first and last offset, as the manifest's column bounds say (or as the
    /// listing read them from the file): checked against the rows read.
    pub ranges: BTreeMap<i32, (Offset, Offset)>,
}

/// A batch holds at most this many records, and is cut once its keys and values pass
/// [`BATCH_BYTES`] (a batch's length is an i32).
const BATCH_RECORDS: usize = 4096;
/// See [`BATCH_RECORDS`].
const BATCH_BYTES: usize = 16 << 20;
/// Timestamps outside `0..=MAX_TIMESTAMP` are not a Kafka record's (and their differences could
/// overflow a batch's deltas).
const MAX_TIMESTAMP: i64 = i64::MAX / 4;

/// How one partition's rows of one or more data files become Kafka batches
/// ([`Transform::Iceberg`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcebergSegment {
    /// Topic (for messages).
    pub topic: String,
    /// The partition whose rows are taken.
    pub partition: i32,
    /// The data files, the segment's key first. With more than one, the fetched bytes are
    /// [`frame`]d.
    pub files: Vec<FileRef>,
    columns: Columns,
}

/// Several objects' bytes as one: each as a little-endian u64 length, then the bytes.
pub fn frame(parts: &[Bytes]) -> Bytes {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for part in parts {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    out.into()
}

fn unframe(object: &str, bytes: &Bytes, count: usize) -> Result<Vec<Bytes>> {
    let mut parts = Vec::with_capacity(count);
    let mut at = 0usize;
    while at < bytes.len() {
        let header = bytes.get(at..at + 8).ok_or_else(|| Error::Inconsistent {
            object: object.to_string(),
            reason: "framed data files end inside a length".into(),
        })?;
        let len = u64::from_le_bytes(header.try_into().unwrap_or([0; 8]));
        let start = at + 8;
        let end = usize::try_from(len).ok().and_then(|l| start.checked_add(l)).filter(|&e| e <= bytes.len());
        let end = end.ok_or_else(|| Error::Inconsistent {
            object: object.to_string(),
            reason: "framed data files end inside a file".into(),
        })?;
        parts.push(bytes.slice(start..end));
        at = end;
    }
    if parts.len() != count {
        return Err(Error::Inconsistent {
            object: object.to_string(),
            reason: format!("{} framed data files, expected {count}", parts.len()),
        });
    }
    Ok(parts)
}

impl IcebergSegment {
    /// The segment's records as Kafka batches, in offset order.
    pub fn translate(&self, object: &str, bytes: &Bytes) -> Result<Bytes> {
        let parts = if self.files.len() == 1 { vec![bytes.clone()] } else { unframe(object, bytes, self.files.len())? };
        let mut records: Vec<(Record, usize)> = Vec::new();
        for (index, (file, part)) in self.files.iter().zip(&parts).enumerate() {
            let name = file.key.as_ref();
            if part.len() as u64 != file.size {
                return Err(Error::CorruptBatch {
                    object: name.to_string(),
                    byte_offset: part.len().min(file.size as usize) as u64,
                    reason: format!("the data file is {} bytes, its manifest says {}", part.len(), file.size),
                });
            }
            let mut actual = BTreeMap::new();
            let rows = read_rows(name, part, &self.columns, self.partition, &mut actual, &mut |record| {
                records.push((record, index))
            })?;
            if rows != file.rows {
                return Err(Error::Inconsistent {
                    object: name.to_string(),
                    reason: format!("holds {rows} rows, its manifest says {}", file.rows),
                });
            }
            // The segments were cut from these ranges: rows outside them would be lost (another
            // partition's rows no segment of it reads) or handed off past (a last offset beyond).
            if actual != file.ranges {
                return Err(Error::Inconsistent {
                    object: name.to_string(),
                    reason: format!(
                        "holds partition -> (first, last offset) {actual:?}, but its manifest's column bounds say {:?}",
                        file.ranges
                    ),
                });
            }
        }
        records.sort_by_key(|(r, _)| r.offset);
        if let Some(pair) = records.windows(2).find(|w| w[0].0.offset == w[1].0.offset) {
            let (a, b) = (&self.files[pair[0].1].key, &self.files[pair[1].1].key);
            return Err(Error::Inconsistent {
                object: a.to_string(),
                reason: format!(
                    "partition {} offset {} is in the table twice (in `{a}` and `{b}`): a table with duplicates is not \
                     a topic's history",
                    self.partition, pair[0].0.offset
                ),
            });
        }
        let records: Vec<Record> = records.into_iter().map(|(r, _)| r).collect();
        let mut out = Vec::new();
        let mut start = 0;
        while start < records.len() {
            // A batch's offsets are deltas from its base (i32): cut where they would not fit.
            let base = records[start].offset;
            let size = |r: &Record| r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len());
            let (mut end, mut bytes) = (start + 1, size(&records[start]));
            while end < records.len()
                && end - start < BATCH_RECORDS
                && bytes + size(&records[end]) <= BATCH_BYTES
                && records[end].offset - base < i64::from(i32::MAX)
            {
                bytes += size(&records[end]);
                end += 1;
            }
            encode_batch(&records[start..end], &mut out);
            start = end;
        }
        Ok(out.into())
    }
}

/// How data files are opened: the Arrow schema some writers embed in the footer
/// (`ARROW:schema`) is skipped. The columns are found by the Parquet schema's field ids anyway,
/// and decoding that embedded schema is where damaged footers made arrow panic.
fn reader_options() -> ArrowReaderOptions {
    ArrowReaderOptions::new().with_skip_arrow_metadata(true)
}

/// Runs `read` (a Parquet or Avro decode of the object `object`), turning a panic inside the parquet,
/// arrow or apache-avro crates on damaged bytes into an error naming the object: bad input must never crash the
/// job (the fuzz test below found such panics; this is the last line behind the checks).
fn guarded<T>(object: &str, at: u64, read: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|panic| {
        let why = crate::error::panic_message(panic.as_ref());
        Err(Error::CorruptBatch {
            object: object.to_string(),
            byte_offset: at,
            reason: format!("reading it failed on damaged bytes (a panic in the Parquet or Avro reader: {why})"),
        })
    })
}

/// The rows of `partition` in the Parquet file `bytes` (`object`), to `emit`; returns the file's
/// row count (all partitions).
fn read_rows(
    object: &str,
    bytes: &Bytes,
    columns: &Columns,
    partition: i32,
    ranges: &mut BTreeMap<i32, (Offset, Offset)>,
    emit: &mut dyn FnMut(Record),
) -> Result<u64> {
    guarded(object, 0, || read_rows_unguarded(object, bytes, columns, partition, ranges, emit))
}

fn read_rows_unguarded(
    object: &str,
    bytes: &Bytes,
    columns: &Columns,
    partition: i32,
    ranges: &mut BTreeMap<i32, (Offset, Offset)>,
    emit: &mut dyn FnMut(Record),
) -> Result<u64> {
    let footer_at = (bytes.len() as u64).saturating_sub(8);
    let corrupt =
        |byte_offset: u64, reason: String| Error::CorruptBatch { object: object.to_string(), byte_offset, reason };
    let metadata = ArrowReaderMetadata::load(bytes, reader_options())
        .map_err(|e| corrupt(footer_at, format!("the Parquet footer cannot be read: {e}")))?;
    let parquet = metadata.metadata().clone();
    let schema = parquet.file_metadata().schema_descr_ptr();
    let wanted: Vec<i32> =
        [Some(columns.partition), Some(columns.offset), columns.timestamp, columns.key, Some(columns.value)]
            .into_iter()
            .flatten()
            .collect();
    let leaves: Vec<usize> = schema
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let info = c.self_type().get_basic_info();
            info.has_id() && wanted.contains(&info.id())
        })
        .map(|(i, _)| i)
        .collect();
    let mut rows = 0u64;
    for group in 0..parquet.num_row_groups() {
        let meta = parquet.row_group(group);
        let group_at =
            leaves.iter().filter_map(|&leaf| meta.columns().get(leaf).map(|c| c.byte_range().0)).min().unwrap_or(0);
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), metadata.clone())
            .with_projection(ProjectionMask::leaves(&schema, leaves.iter().copied()))
            .with_row_groups(vec![group])
            .with_batch_size(8192)
            .build()
            .map_err(|e| corrupt(group_at, format!("row group {group} cannot be read: {e}")))?;
        for batch in reader {
            let batch = batch.map_err(|e| corrupt(group_at, format!("row group {group} cannot be read: {e}")))?;
            rows += batch.num_rows() as u64;
            emit_rows(object, group_at, &batch, columns, partition, ranges, emit)?;
        }
    }
    Ok(rows)
}

/// A column found by field id, with the struct arrays around it (a null parent makes it null).
struct Found {
    array: ArrayRef,
    parents: Vec<ArrayRef>,
}

impl Found {
    fn is_null(&self, row: usize) -> bool {
        self.array.is_null(row) || self.parents.iter().any(|p| p.is_null(row))
    }
}

fn field_id(field: &arrow_schema::Field) -> Option<i32> {
    field.metadata().get(parquet::arrow::PARQUET_FIELD_ID_META_KEY).and_then(|v| v.parse().ok())
}

fn find(fields: &arrow_schema::Fields, arrays: &[ArrayRef], id: i32, parents: &mut Vec<ArrayRef>) -> Option<Found> {
    for (field, array) in fields.iter().zip(arrays) {
        if field_id(field) == Some(id) {
            return Some(Found { array: array.clone(), parents: parents.clone() });
        }
        if let DataType::Struct(children) = field.data_type() {
            let structs = array.as_struct();
            parents.push(array.clone());
            let found = find(children, structs.columns(), id, parents);
            parents.pop();
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

fn bytes_at(array: &ArrayRef, row: usize) -> Option<Bytes> {
    match array.data_type() {
        DataType::Binary => Some(Bytes::copy_from_slice(array.as_binary::<i32>().value(row))),
        DataType::LargeBinary => Some(Bytes::copy_from_slice(array.as_binary::<i64>().value(row))),
        DataType::BinaryView => Some(Bytes::copy_from_slice(array.as_binary_view().value(row))),
        DataType::FixedSizeBinary(_) => Some(Bytes::copy_from_slice(array.as_fixed_size_binary().value(row))),
        _ => None,
    }
}

fn emit_rows(
    object: &str,
    at: u64,
    batch: &RecordBatch,
    columns: &Columns,
    partition: i32,
    ranges: &mut BTreeMap<i32, (Offset, Offset)>,
    emit: &mut dyn FnMut(Record),
) -> Result<()> {
    let schema = batch.schema();
    let wrong = |reason: String| Error::Inconsistent { object: object.to_string(), reason };
    let column = |id: i32| find(schema.fields(), batch.columns(), id, &mut Vec::new());
    let missing = |what: &str, id: i32| wrong(format!("has no column with field id {id} ({what})"));
    let partitions = column(columns.partition).ok_or_else(|| missing("partition", columns.partition))?;
    let offsets = column(columns.offset).ok_or_else(|| missing("offset", columns.offset))?;
    let values = column(columns.value).ok_or_else(|| missing("value", columns.value))?;
    let keys = columns.key.and_then(column);
    let timestamps = columns.timestamp.and_then(column);
    let (Some(parts), Some(offs)) =
        (partitions.array.as_primitive_opt::<Int32Type>(), offsets.array.as_primitive_opt::<Int64Type>())
    else {
        return Err(wrong(format!(
            "its partition and offset columns are {} and {}, not int and long",
            partitions.array.data_type(),
            offsets.array.data_type()
        )));
    };
    for row in 0..batch.num_rows() {
        if partitions.is_null(row) || offsets.is_null(row) {
            return Err(Error::CorruptBatch {
                object: object.to_string(),
                byte_offset: at,
                reason: format!("row {row} of the row group at this offset has no partition or no offset"),
            });
        }
        let offset = offs.value(row);
        let range = ranges.entry(parts.value(row)).or_insert((offset, offset));
        *range = (range.0.min(offset), range.1.max(offset));
        if parts.value(row) != partition {
            continue;
        }
        if !(0..=crate::segment::record_batch::MAX_OFFSET).contains(&offset) {
            return Err(wrong(format!("partition {partition} has offset {offset}, out of Kafka's range")));
        }
        let timestamp = match &timestamps {
            Some(found) if !found.is_null(row) => {
                let ms = millis(object, &found.array, row)?;
                if !(0..=MAX_TIMESTAMP).contains(&ms) {
                    return Err(wrong(format!(
                        "partition {partition} offset {offset} has timestamp {ms} ms, outside Kafka's range"
                    )));
                }
                Some(ms)
            }
            _ => None,
        };
        let key = match &keys {
            Some(found) if !found.is_null(row) => Some(
                bytes_at(&found.array, row)
                    .ok_or_else(|| wrong(format!("its key column is {}, not binary", found.array.data_type())))?,
            ),
            _ => None,
        };
        let value = if values.is_null(row) {
            None
        } else {
            Some(
                bytes_at(&values.array, row)
                    .ok_or_else(|| wrong(format!("its value column is {}, not binary", values.array.data_type())))?,
            )
        };
        emit(Record { offset, timestamp, key, value });
    }
    Ok(())
}

/// A timestamp column's value in milliseconds, exactly (Kafka's timestamps are milliseconds).
fn millis(object: &str, array: &ArrayRef, row: usize) -> Result<i64> {
    use arrow_array::types::{
        TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    };
    let (raw, per_milli): (Option<i64>, i64) = match array.data_type() {
        DataType::Int64 => (Some(array.as_primitive::<Int64Type>().value(row)), 1),
        DataType::Timestamp(TimeUnit::Second, _) => {
            let s = array.as_primitive::<TimestampSecondType>().value(row);
            return s.checked_mul(1000).ok_or_else(|| Error::Inconsistent {
                object: object.to_string(),
                reason: format!("timestamp {s} s is out of range"),
            });
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            (Some(array.as_primitive::<TimestampMillisecondType>().value(row)), 1)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            (Some(array.as_primitive::<TimestampMicrosecondType>().value(row)), 1_000)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            (Some(array.as_primitive::<TimestampNanosecondType>().value(row)), 1_000_000)
        }
        other => {
            return Err(Error::Inconsistent {
                object: object.to_string(),
                reason: format!("its timestamp column is {other}, not a timestamp or long"),
            })
        }
    };
    let raw = raw.unwrap_or_default();
    if raw % per_milli != 0 {
        return Err(Error::Inconsistent {
            object: object.to_string(),
            reason: format!("timestamp {raw} is not a whole millisecond, so it is not a Kafka record's"),
        });
    }
    Ok(raw / per_milli)
}

/// What was read of the table: its data files with their partitions' offset ranges, and what
/// `inspect` should say.
#[derive(Debug)]
struct Table {
    files: Vec<DataFileInfo>,
    columns: Columns,
    notes: Vec<String>,
    partitions: Vec<i32>,
}

/// The table's metadata file, relative to its location.
async fn metadata_file(archive: &Archive, named: Option<&str>) -> Result<String> {
    if let Some(named) = named {
        return Ok(named.to_string());
    }
    let hint = archive.key("metadata/version-hint.text");
    match object_store::ObjectStoreExt::get(archive.store.as_ref(), &hint).await {
        Ok(found) => {
            let text = found.bytes().await.map_err(|source| Error::ObjectStore { object: hint.to_string(), source })?;
            let text = String::from_utf8_lossy(&text).trim().to_string();
            // A hint may hold a number, a file name, or a path or URI of the file.
            let text = text.rsplit('/').next().unwrap_or_default().to_string();
            return Ok(if text.ends_with(".metadata.json") {
                format!("metadata/{text}")
            } else if text.parse::<u64>().is_ok() {
                format!("metadata/v{text}.metadata.json")
            } else {
                return Err(Error::CorruptMetadata {
                    object: hint.to_string(),
                    byte_offset: 0,
                    reason: format!("`{text}` is neither a version number nor a metadata file name"),
                });
            });
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(source) => return Err(Error::ObjectStore { object: hint.to_string(), source }),
    }
    let dir = archive.key("metadata");
    let mut best: Option<(u64, String)> = None;
    let mut tie = None;
    for meta in archive.list_objects(&dir).await? {
        let Some(name) = meta.location.filename().filter(|n| n.ends_with(".metadata.json")) else { continue };
        let digits: String = name.trim_start_matches('v').chars().take_while(char::is_ascii_digit).collect();
        let Ok(version) = digits.parse::<u64>() else { continue };
        match &best {
            Some((v, _)) if *v > version => {}
            Some((v, other)) if *v == version => tie = Some((other.clone(), name.to_string())),
            _ => {
                best = Some((version, name.to_string()));
                tie = None;
            }
        }
    }
    if let Some((a, b)) = tie {
        return Err(Error::InvalidUrl {
            url: archive.url.clone(),
            reason: format!(
                "two metadata files have the same version (`{a}`, `{b}`): name the one to read, e.g. \
                 {}/metadata/{b}",
                archive.url.trim_end_matches('/')
            ),
        });
    }
    match best {
        Some((_, name)) => Ok(format!("metadata/{name}")),
        None => Err(Error::InvalidUrl {
            url: archive.url.clone(),
            reason: "no Iceberg table here: no metadata/*.metadata.json; give the table's location".into(),
        }),
    }
}

/// The key of `uri` (a path the table's metadata records) in `archive`: relative to the table's
/// `location`.
fn key_of(archive: &Archive, location: &str, uri: &str, metadata: &str) -> Result<Path> {
    let location = location.trim_end_matches('/');
    let strip = |s: &str| s.strip_prefix("file://").map(String::from).unwrap_or_else(|| s.to_string());
    let (loc, path) = (strip(location), strip(uri));
    match path.strip_prefix(&loc).and_then(|rest| rest.strip_prefix('/')) {
        Some(rest) => Ok(archive.key(rest)),
        None => Err(Error::Inconsistent {
            object: metadata.to_string(),
            reason: format!(
                "names `{uri}`, outside the table's location `{location}`: Kappa reads a table's files under its \
                 location"
            ),
        }),
    }
}

fn field_path_id(metadata: &TableMetadata, path: &str) -> Option<(i32, Type)> {
    metadata.current_schema().field_by_name(path).map(|f| (f.id, (*f.field_type).clone()))
}

fn int_bound(value: Option<&iceberg::spec::Datum>) -> Option<i64> {
    match value?.literal() {
        PrimitiveLiteral::Int(v) => Some(i64::from(*v)),
        PrimitiveLiteral::Long(v) => Some(*v),
        _ => None,
    }
}

/// One data file with its per-partition offset ranges.
#[derive(Debug)]
struct DataFileInfo {
    file: FileRef,
    /// Partition → (first, last) offset.
    ranges: BTreeMap<i32, (Offset, Offset)>,
}

/// The keys (with sizes) of every object under the table's location: which listed data files exist.
async fn present_objects(archive: &Archive) -> Result<HashMap<String, u64>> {
    Ok(archive.list_objects(&archive.prefix).await?.into_iter().map(|m| (m.location.to_string(), m.size)).collect())
}

async fn load(layout: &IcebergLayout, archive: &Archive) -> Result<Table> {
    let metadata_rel = metadata_file(archive, layout.metadata_file.as_deref()).await?;
    let metadata_key = archive.key(&metadata_rel);
    let metadata_name = metadata_key.to_string();
    let mut bytes = archive.fetch(&metadata_key).await?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        // `write.metadata.compression-codec=gzip` (`.gz.metadata.json`, or a `.metadata.json.gz`).
        let mut plain = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(flate2::read::GzDecoder::new(&bytes[..]), 1 << 30),
            &mut plain,
        )
        .map_err(|e| Error::CorruptMetadata {
            object: metadata_name.clone(),
            byte_offset: 0,
            reason: format!("gzip: {e}"),
        })?;
        bytes = plain.into();
    }
    let metadata: TableMetadata = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptMetadata {
        object: metadata_name.clone(),
        byte_offset: 0,
        reason: format!("not Iceberg table metadata: {e}"),
    })?;
    let refuse = |reason: String| Error::Inconsistent { object: metadata_name.clone(), reason };
    let mapping = MAPPINGS
        .iter()
        .find(|m| field_path_id(&metadata, m.partition).is_some() && field_path_id(&metadata, m.offset).is_some())
        .ok_or_else(|| {
            refuse(format!(
                "its schema has none of the known vendors' partition and offset fields ({}): not an Iceberg topic \
                 Kappa knows",
                MAPPINGS
                    .iter()
                    .map(|m| format!("{}: {}, {}", m.vendor, m.partition, m.offset))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
    let id = |path: &str| field_path_id(&metadata, path);
    let (partition, partition_type) = id(mapping.partition).expect("found above");
    let (offset, offset_type) = id(mapping.offset).expect("found above");
    if partition_type != Type::Primitive(PrimitiveType::Int) || offset_type != Type::Primitive(PrimitiveType::Long) {
        return Err(refuse(format!(
            "its {} is {partition_type} and its {} is {offset_type}, not int and long",
            mapping.partition, mapping.offset
        )));
    }
    let binary = |t: &Type| matches!(t, Type::Primitive(PrimitiveType::Binary | PrimitiveType::Fixed(_)));
    let value = match mapping.value.iter().find_map(|v| id(v).map(|found| (*v, found))) {
        Some((_, (vid, t))) if binary(&t) => vid,
        Some((name, (_, t))) => {
            return Err(refuse(format!(
                "its value `{name}` is {t}, not binary: the table keeps the value reshaped into columns ({} schema \
                 mode), so the records' bytes cannot be replayed exactly; write the topic's table in its raw mode \
                 (Redpanda `key_value`, AutoMQ raw `_kafka_value`, Aiven `value_raw`)",
                mapping.vendor
            )))
        }
        None => {
            return Err(refuse(format!(
                "it has no value column ({}): the table keeps the value reshaped into columns, so the records' bytes \
                 cannot be replayed exactly; write the topic's table in its raw mode",
                mapping.value.join(" or ")
            )))
        }
    };
    // Key and timestamp are part of the record: a table without them (or with the key reshaped)
    // would replay every record without, silently.
    let key = match id(mapping.key) {
        Some((k, t)) if binary(&t) => k,
        Some((_, t)) => {
            return Err(refuse(format!(
                "its key `{}` is {t}, not binary: the key is reshaped, so the records' bytes cannot be replayed \
                 exactly; write the topic's table in its raw mode",
                mapping.key
            )))
        }
        None => {
            return Err(refuse(format!(
                "it has no key column `{}`: the records' keys cannot be replayed; write the topic's table in its raw \
                 mode",
                mapping.key
            )))
        }
    };
    let Some((timestamp, _)) = id(mapping.timestamp) else {
        return Err(refuse(format!("it has no timestamp column `{}`", mapping.timestamp)));
    };
    let columns = Columns { partition, offset, timestamp: Some(timestamp), key: Some(key), value };

    // What may have lost records.
    let mut lossy = Vec::new();
    let mut expired = None;
    let current = metadata.current_snapshot().cloned();
    let mut ancestor = current.clone();
    let mut visited = std::collections::HashSet::new();
    while let Some(snapshot) = ancestor {
        if !visited.insert(snapshot.snapshot_id()) {
            return Err(refuse(format!("its snapshots' parents form a cycle at snapshot {}", snapshot.snapshot_id())));
        }
        let count = |key: &str| snapshot.summary().additional_properties.get(key).and_then(|v| v.parse::<u64>().ok());
        match snapshot.summary().operation {
            Operation::Delete | Operation::Overwrite => lossy.push(format!(
                "snapshot {} ({}) deleted or rewrote rows",
                snapshot.snapshot_id(),
                snapshot.summary().operation.as_str()
            )),
            // A rewrite that applies delete files leaves fewer rows than it read.
            Operation::Replace => {
                if let (Some(deleted), Some(added)) = (count("deleted-records"), count("added-records")) {
                    if deleted > added {
                        lossy.push(format!(
                            "snapshot {} (replace) removed {deleted} rows and wrote {added}",
                            snapshot.snapshot_id()
                        ));
                    }
                }
            }
            Operation::Append => {}
        }
        ancestor = match snapshot.parent_snapshot_id() {
            Some(parent) => match metadata.snapshot_by_id(parent) {
                Some(found) => Some(found.clone()),
                None => {
                    expired = Some(parent);
                    None
                }
            },
            None => None,
        };
    }
    let identifiers: Vec<i32> = metadata.current_schema().identifier_field_ids().collect();
    if !identifiers.is_empty() {
        lossy.push(format!(
            "the schema has identifier fields {identifiers:?} (an upsert table keeps a key's latest row)"
        ));
    }
    let mut properties: Vec<(&String, &String)> = metadata.properties().iter().collect();
    properties.sort();
    for (k, v) in properties {
        let (k_low, v_low) = (k.to_ascii_lowercase(), v.to_ascii_lowercase());
        let drops = (k_low.contains("upsert") && v_low == "true")
            || (k_low.ends_with("errors.tolerance") && v_low != "none")
            || (k_low.contains("invalid.record.action") && v_low == "drop");
        if drops {
            lossy.push(format!("table property {k}={v} lets records be dropped or replaced"));
        }
    }

    let mut files: Vec<DataFileInfo> = Vec::new();
    let mut checksums = (0usize, 0usize);
    if let Some(snapshot) = &current {
        let list_key = key_of(archive, metadata.location(), snapshot.manifest_list(), &metadata_name)?;
        let list_bytes = archive.fetch(&list_key).await?;
        let version = metadata.format_version();
        // A manifest list written before the table was upgraded keeps its older format version.
        let parse = |v| guarded(list_key.as_ref(), 0, || Ok(ManifestList::parse_with_version(&list_bytes, v)));
        let list = parse(version)?
            .or_else(|first| {
                [FormatVersion::V1, FormatVersion::V2, FormatVersion::V3]
                    .into_iter()
                    .filter(|v| *v != version)
                    .find_map(|v| parse(v).ok().and_then(|parsed| parsed.ok()))
                    .ok_or(first)
            })
            .map_err(|e| Error::CorruptMetadata {
                object: list_key.to_string(),
                byte_offset: 0,
                reason: format!("not an Iceberg manifest list: {e}"),
            })?;
        let present = present_objects(archive).await?;
        for manifest_file in list.entries() {
            let manifest_key = key_of(archive, metadata.location(), &manifest_file.manifest_path, list_key.as_ref())?;
            if manifest_file.content == ManifestContentType::Deletes {
                lossy.push(format!("delete manifest `{manifest_key}` deletes rows"));
                continue;
            }
            let manifest_bytes = archive.fetch(&manifest_key).await?;
            // apache-avro panics on some damaged headers (the fuzz test below found one).
            let manifest =
                guarded(manifest_key.as_ref(), 0, || Ok(Manifest::parse_avro(&manifest_bytes)))?.map_err(|e| {
                    Error::CorruptMetadata {
                        object: manifest_key.to_string(),
                        byte_offset: 0,
                        reason: format!("not an Iceberg manifest: {e}"),
                    }
                })?;
            for entry in manifest.entries() {
                if entry.status() == ManifestStatus::Deleted {
                    continue;
                }
                let data = entry.data_file();
                let file_key = key_of(archive, metadata.location(), data.file_path(), manifest_key.as_ref())?;
                if data.content_type() != DataContentType::Data {
                    lossy.push(format!("delete file `{file_key}` deletes rows"));
                    continue;
                }
                if data.file_format() != DataFileFormat::Parquet {
                    return Err(Error::UnsupportedFormat {
                        object: file_key.to_string(),
                        byte_offset: 0,
                        what: format!("a {} data file: Kappa reads Parquet data files", data.file_format()),
                    });
                }
                let mut file = FileRef {
                    key: file_key,
                    size: data.file_size_in_bytes(),
                    rows: data.record_count(),
                    ranges: BTreeMap::new(),
                };
                let (p_lo, p_hi) =
                    (int_bound(data.lower_bounds().get(&partition)), int_bound(data.upper_bounds().get(&partition)));
                let (o_lo, o_hi) =
                    (int_bound(data.lower_bounds().get(&offset)), int_bound(data.upper_bounds().get(&offset)));
                let is_present = present.contains_key(file.key.as_ref());
                let ranges = match (p_lo, p_hi, o_lo, o_hi) {
                    (Some(lo), Some(hi), Some(first), Some(last)) if lo == hi && first <= last => {
                        let p = i32::try_from(lo).map_err(|_| refuse(format!("partition bound {lo} out of range")))?;
                        BTreeMap::from([(p, (first, last))])
                    }
                    _ if file.rows == 0 => BTreeMap::new(),
                    _ if !is_present => {
                        return Err(Error::Inconsistent {
                            object: file.key.to_string(),
                            reason: format!(
                                "listed by manifest `{manifest_key}` but missing from the store, and the manifest's \
                                 column bounds do not say which offsets it held; restore it"
                            ),
                        })
                    }
                    // Bounds span partitions (or are absent): read the partition and offset columns.
                    _ => {
                        let bytes = archive.fetch(&file.key).await?;
                        scan_ranges(file.key.as_ref(), &bytes, &columns)?
                    }
                };
                if is_present {
                    // Page checksums: looked at in one file per manifest (they are a writer setting).
                    if checksums.0 + checksums.1 < 1 {
                        let bytes = archive.fetch(&file.key).await?;
                        if has_page_checksums(&bytes) {
                            checksums.0 += 1;
                        } else {
                            checksums.1 += 1;
                        }
                    }
                }
                file.ranges = ranges.clone();
                files.push(DataFileInfo { file, ranges });
            }
        }
    }
    if !lossy.is_empty() {
        if !layout.allow_lossy {
            return Err(Error::LossyTable { object: metadata_name, reasons: lossy.join("; ") });
        }
        tracing::warn!(table = %metadata_name, reasons = %lossy.join("; "), "replaying an Iceberg table that may have lost records (--allow-lossy-table)");
    }

    let mut notes = vec![format!(
        "Iceberg table `{metadata_name}` ({} mapping), snapshot {}; {} data files; such tables leave out \
         transaction markers and aborted records, so gaps between segments are expected",
        mapping.vendor,
        current.as_ref().map_or("none (empty table)".to_string(), |s| s.snapshot_id().to_string()),
        files.len(),
    )];
    if let Some(parent) = expired {
        notes.push(format!(
            "snapshots before {parent} have expired: whether they deleted rows cannot be checked (the rows the \
             current snapshot holds are read either way)"
        ));
    }
    if !lossy.is_empty() {
        notes.push(format!("lossy table replayed as it is (--allow-lossy-table): {}", lossy.join("; ")));
    }
    if checksums.1 > 0 {
        notes.push(
            "its data files carry no Parquet page checksums: a byte damaged inside a page may read as another value"
                .into(),
        );
    }
    let partitions: std::collections::BTreeSet<i32> = files.iter().flat_map(|f| f.ranges.keys().copied()).collect();
    Ok(Table { files, columns, notes, partitions: partitions.into_iter().collect() })
}

/// Whether the first page header of the first column chunk has a `crc` (field 4 of Parquet's
/// `PageHeader`): a writer with checksums on (pyarrow's `write_page_checksum`, parquet-java's
/// default) writes one on every page. parquet's reader checks them but does not say whether any
/// was there, so this reads the header's leading thrift fields.
fn has_page_checksums(bytes: &Bytes) -> bool {
    guarded("", 0, || Ok(has_page_checksums_unguarded(bytes))).unwrap_or(false)
}

fn has_page_checksums_unguarded(bytes: &Bytes) -> bool {
    let Ok(metadata) = ArrowReaderMetadata::load(bytes, reader_options()) else { return false };
    let Some(column) = metadata.metadata().row_groups().first().and_then(|g| g.columns().first()) else {
        return false;
    };
    let start = usize::try_from(column.byte_range().0).unwrap_or(usize::MAX);
    bytes.get(start..).is_some_and(|header| thrift_has_field(header, 4))
}

/// Whether a thrift compact-protocol struct at the start of `bytes` has field `wanted` (walking
/// only the leading integer fields, as a page header starts: type, sizes, crc).
fn thrift_has_field(bytes: &[u8], wanted: i16) -> bool {
    let mut at = 0usize;
    let mut last = 0i16;
    while let Some(&byte) = bytes.get(at) {
        at += 1;
        if byte == 0 {
            return false;
        }
        let delta = (byte >> 4) as i16;
        let kind = byte & 0x0f;
        let field = if delta == 0 { return false } else { last + delta };
        if field == wanted {
            // The crc is an i32.
            return kind == 5;
        }
        if field > wanted || kind != 5 {
            // Only i32 fields (type 5, zigzag varints) come before the crc.
            return false;
        }
        while bytes.get(at).is_some_and(|b| b & 0x80 != 0) {
            at += 1;
        }
        at += 1;
        last = field;
    }
    false
}

/// Per partition, the first and last offset in a data file (reading only those two columns).
fn scan_ranges(object: &str, bytes: &Bytes, columns: &Columns) -> Result<BTreeMap<i32, (Offset, Offset)>> {
    guarded(object, 0, || scan_ranges_unguarded(object, bytes, columns))
}

fn scan_ranges_unguarded(object: &str, bytes: &Bytes, columns: &Columns) -> Result<BTreeMap<i32, (Offset, Offset)>> {
    let narrow = Columns { timestamp: None, key: None, value: columns.offset, ..columns.clone() };
    // Every partition's rows: read once with a filter per partition would be N passes; read the
    // two columns and group instead.
    let metadata = ArrowReaderMetadata::load(bytes, reader_options()).map_err(|e| Error::CorruptBatch {
        object: object.to_string(),
        byte_offset: (bytes.len() as u64).saturating_sub(8),
        reason: format!("the Parquet footer cannot be read: {e}"),
    })?;
    let schema = metadata.metadata().file_metadata().schema_descr_ptr();
    let leaves: Vec<usize> = schema
        .columns()
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let info = c.self_type().get_basic_info();
            info.has_id() && (info.id() == narrow.partition || info.id() == narrow.offset)
        })
        .map(|(i, _)| i)
        .collect();
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), metadata)
        .with_projection(ProjectionMask::leaves(&schema, leaves))
        .build()
        .map_err(|e| Error::CorruptBatch { object: object.to_string(), byte_offset: 0, reason: e.to_string() })?;
    let mut ranges: BTreeMap<i32, (Offset, Offset)> = BTreeMap::new();
    for batch in reader {
        let batch = batch.map_err(|e| Error::CorruptBatch {
            object: object.to_string(),
            byte_offset: 0,
            reason: e.to_string(),
        })?;
        let schema = batch.schema();
        let (Some(parts), Some(offs)) = (
            find(schema.fields(), batch.columns(), narrow.partition, &mut Vec::new()),
            find(schema.fields(), batch.columns(), narrow.offset, &mut Vec::new()),
        ) else {
            return Err(Error::Inconsistent {
                object: object.to_string(),
                reason: "has no partition or offset column".into(),
            });
        };
        let (Some(p), Some(o)) =
            (parts.array.as_primitive_opt::<Int32Type>(), offs.array.as_primitive_opt::<Int64Type>())
        else {
            return Err(Error::Inconsistent {
                object: object.to_string(),
                reason: "its partition and offset columns are not int and long".into(),
            });
        };
        for row in 0..batch.num_rows() {
            if parts.is_null(row) || offs.is_null(row) {
                return Err(Error::CorruptBatch {
                    object: object.to_string(),
                    byte_offset: 0,
                    reason: format!("row {row} has no partition or no offset"),
                });
            }
            let (partition, offset) = (p.value(row), o.value(row));
            let range = ranges.entry(partition).or_insert((offset, offset));
            range.0 = range.0.min(offset);
            range.1 = range.1.max(offset);
        }
    }
    Ok(ranges)
}

/// Partition `p`'s data files grouped where their offset ranges overlap, in offset order; a group
/// with a file missing from `present` is a hole.
fn listing(topic: &str, p: i32, table: &Table, present: &HashMap<String, u64>) -> Listing {
    let (files, columns, notes) = (&table.files, &table.columns, &table.notes);
    let mut ranges: Vec<(Offset, Offset, usize)> = Vec::new();
    for (index, info) in files.iter().enumerate() {
        if let Some(&(first, last)) = info.ranges.get(&p) {
            ranges.push((first, last, index));
        }
    }
    {
        ranges.sort();
        // Groups: (first, last, file indexes).
        let mut groups: Vec<(Offset, Offset, Vec<usize>)> = Vec::new();
        for (first, last, index) in ranges {
            match groups.last_mut() {
                Some(group) if first <= group.1 => {
                    group.1 = group.1.max(last);
                    group.2.push(index);
                }
                _ => groups.push((first, last, vec![index])),
            }
        }
        let mut listing = Listing::default();
        let ends: Vec<Offset> =
            groups.iter().skip(1).map(|g| g.0).chain(groups.last().map(|g| g.1.saturating_add(1))).collect();
        let mut pending_hole: Option<Offset> = None;
        for ((first, _, members), next) in groups.iter().zip(ends) {
            let refs: Vec<FileRef> = members.iter().map(|&i| files[i].file.clone()).collect();
            let key = refs[0].key.clone();
            if let Some(expected) = pending_hole.take() {
                listing.holes.push(Hole {
                    topic: topic.to_string(),
                    partition: p,
                    expected_offset: expected,
                    found_offset: *first,
                    object: key.to_string(),
                });
            }
            if members.iter().any(|&i| !present.contains_key(files[i].file.key.as_ref())) {
                pending_hole = Some(*first);
                continue;
            }
            let note = listing.segments.is_empty().then(|| notes.join("; "));
            listing.segments.push(SegmentRef {
                key,
                base_offset: *first,
                next_offset: next,
                size: refs.iter().fold(0u64, |sum, f| sum.saturating_add(f.size)),
                relative_offsets: false,
                aborted: Default::default(),
                transform: Transform::Iceberg(Arc::new(IcebergSegment {
                    topic: topic.to_string(),
                    partition: p,
                    files: refs,
                    columns: columns.clone(),
                })),
                note,
            });
        }
        if let Some(expected) = pending_hole {
            // The last group is missing: the hole runs to the end the manifest shows.
            let end = groups.last().map_or(expected, |g| g.1.saturating_add(1));
            let object = groups.last().map(|g| files[g.2[0]].file.key.to_string()).unwrap_or_default();
            listing.holes.push(Hole {
                topic: topic.to_string(),
                partition: p,
                expected_offset: expected,
                found_offset: end,
                object,
            });
        }
        listing
    }
}

impl IcebergLayout {
    async fn table(&self, archive: &Archive) -> Result<Arc<Table>> {
        self.table.get_or_try_init(|| async { load(self, archive).await.map(Arc::new) }).await.cloned()
    }
}

impl ArchiveLayout for IcebergLayout {
    fn name(&self) -> &'static str {
        "iceberg"
    }

    fn allowing_lossy(&self) -> Option<Arc<dyn ArchiveLayout>> {
        Some(Arc::new(IcebergLayout::new(self.metadata_file.clone(), true)))
    }

    fn partitions<'a>(&'a self, archive: &'a Archive, _topic: &'a str) -> BoxFuture<'a, Result<Vec<i32>>> {
        async move { Ok(self.table(archive).await?.partitions.clone()) }.boxed()
    }

    fn list<'a>(&'a self, archive: &'a Archive, topic: &'a str, partition: i32) -> BoxFuture<'a, Result<Listing>> {
        async move {
            let table = self.table(archive).await?;
            // Presence is checked on every listing: a data file may go missing after the table
            // was read.
            let present = present_objects(archive).await?;
            Ok(listing(topic, partition, &table, &present))
        }
        .boxed()
    }
}

/// The segment's objects, fetched: one data file's bytes, or several [`frame`]d.
pub(crate) async fn fetch(store: &dyn object_store::ObjectStore, segment: &IcebergSegment) -> Result<Bytes> {
    let mut parts = Vec::with_capacity(segment.files.len());
    for file in &segment.files {
        parts.push(crate::archive::get_bytes(store, &file.key).await?);
    }
    Ok(if parts.len() == 1 { parts.remove(0) } else { frame(&parts) })
}

#[cfg(test)]
mod tests {
    //! Tables written by pyiceberg (`scripts/iceberg_tables.py`), in each vendor's mapping.

    use super::*;
    use crate::layout::conformance::{check_layout_damaging, history};
    use crate::source::ReplaySource;
    use base64::Engine as _;
    use kappa_engine::{PartitionId, SourceFactory};
    use object_store::ObjectStoreExt;

    /// Writes `records` (partition, record) as the table `kafka.{name}` in `warehouse` with the
    /// fixture script; returns the table's location URL.
    pub(crate) fn write_table(
        warehouse: &std::path::Path,
        name: &str,
        vendor: &str,
        records: &[(i32, Record)],
        args: &[&str],
    ) -> String {
        let b64 = |b: &Option<Bytes>| b.as_ref().map(|b| base64::engine::general_purpose::STANDARD.encode(b));
        let lines: Vec<String> = records
            .iter()
            .map(|(p, r)| {
                serde_json::json!({
                    "partition": p, "offset": r.offset, "timestamp_ms": r.timestamp,
                    "key": b64(&r.key), "value": b64(&r.value),
                })
                .to_string()
            })
            .collect();
        let input = warehouse.join(format!("{name}.jsonl"));
        std::fs::write(&input, lines.join("\n") + "\n").expect("write records");
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/iceberg_tables.py");
        let output = std::process::Command::new("python3")
            .arg(&script)
            .args(["--warehouse", &format!("file://{}", warehouse.join("wh").display())])
            .args(["--table", &format!("kafka.{name}"), "--vendor", vendor, "--records"])
            .arg(&input)
            .args(args)
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "scripts/iceberg_tables.py failed (is pyiceberg installed? python3 -m pip install \
             'pyiceberg[pyarrow,sql-sqlite]', or run scripts/test):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let out: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the script prints JSON");
        out["location"].as_str().expect("location").to_string()
    }

    fn open(location: &str) -> Archive {
        Archive::open_layout(location, Some("iceberg"), None).expect("opens")
    }

    fn replay(archive: &Archive) -> Result<BTreeMap<i32, Vec<Record>>> {
        let source = ReplaySource::open(archive.clone(), "t")?;
        let parts = source.partitions().expect("partitions");
        let owned: Vec<(PartitionId, Option<Offset>)> = parts.iter().map(|p| (p.clone(), None)).collect();
        let mut reader = source.open(&owned).expect("opens");
        let (mut out, mut finished) = (Vec::new(), Vec::new());
        while finished.len() < owned.len() {
            reader.poll(&mut out, &mut finished).map_err(|e| *e.downcast::<Error>().expect("ours"))?;
            std::thread::yield_now();
        }
        let mut by: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for (i, r) in out {
            by.entry(owned[i].0.partition).or_default().push(r);
        }
        Ok(by)
    }

    /// Every partition's records in three runs, ordered so that the script's three contiguous
    /// commits each hold a third of every partition.
    fn thirds(history: &[(i32, Vec<Record>)]) -> Vec<(i32, Record)> {
        (0..3)
            .flat_map(|k| {
                history.iter().flat_map(move |(p, rs)| {
                    let n = rs.len().div_ceil(3);
                    rs.iter().skip(k * n).take(n).map(move |r| (*p, r.clone()))
                })
            })
            .collect()
    }

    /// Where a byte of `victim`'s first data page lies: damage there is in checked bytes (the
    /// footer is not checksummed).
    fn inside_a_page(archive: &Archive, victim: &Path) -> usize {
        let bytes = crate::archive::runtime().block_on(archive.fetch(victim)).expect("victim");
        let metadata = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new()).expect("parquet");
        let column = &metadata.metadata().row_groups()[0].columns().last().expect("a column").clone();
        let (start, len) = column.byte_range();
        (start + len - 2) as usize
    }

    #[test]
    fn iceberg_layout_conforms() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Three appends per partition, one data file each, with page checksums.
        let location = write_table(
            dir.path(),
            "conformance",
            "redpanda",
            &thirds(&history()),
            &["--commits", "3", "--file-per-partition", "--page-checksums"],
        );
        let archive = open(&location);
        let segments = crate::archive::runtime().block_on(archive.layout.segments(&archive, "t", 0)).expect("lists");
        assert_eq!(segments.len(), 3, "a segment per data file: {segments:?}");
        let victim = segments[0].key.clone();
        let at = inside_a_page(&archive, &victim);
        check_layout_damaging(&archive, "t", &history(), &victim, Some(at), &segments[1].key);
    }

    /// Records whose timestamps go back and forth across hours, so a partition's offsets
    /// interleave between the hour-partitioned data files; offsets with gaps (markers, aborts).
    fn interleaved() -> Vec<(i32, Record)> {
        let hour = 3_600_000;
        (0..2)
            .flat_map(|p| {
                (0..30).map(move |i| {
                    let ts = 1_700_000_000_000 + if i % 2 == 0 { 0 } else { hour } + i;
                    (
                        p,
                        Record {
                            offset: 3 * i + i64::from(p),
                            timestamp: Some(ts),
                            key: (i % 4 != 0).then(|| Bytes::from(format!("k{i}"))),
                            value: (i != 7).then(|| Bytes::from(vec![i as u8, 0, 255])),
                        },
                    )
                })
            })
            .collect()
    }

    fn expected(records: &[(i32, Record)]) -> BTreeMap<i32, Vec<Record>> {
        let mut by: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for (p, r) in records {
            by.entry(*p).or_default().push(r.clone());
        }
        by
    }

    #[test]
    fn every_vendor_mapping_replays_exactly_with_interleaved_files_and_gaps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = interleaved();
        for vendor in ["redpanda", "automq", "aiven"] {
            let location = write_table(dir.path(), vendor, vendor, &records, &["--commits", "3"]);
            let archive = open(&location);
            assert_eq!(archive.layout.name(), "iceberg");
            let replayed = replay(&archive).unwrap_or_else(|e| panic!("{vendor}: {e}"));
            assert_eq!(replayed, expected(&records), "{vendor}: the records, in offset order");
            let source = ReplaySource::open(archive.clone(), "t").expect("opens");
            // The handoff continues after the largest offset (gaps are legitimate).
            assert_eq!(source.end_offsets(), BTreeMap::from([(0, 88), (1, 89)]), "{vendor}");
            let summary = crate::inspect::summarize(&archive, "t").expect("inspects");
            assert!(summary.damaged().is_empty(), "{vendor}: {:?}", summary.damaged());
            let notes = summary.partitions[&0].notes.join(" ");
            assert!(notes.contains(&format!("({vendor} mapping), snapshot ")), "{vendor}: {notes}");
            // Detected without --layout, from the table's `metadata/`.
            let detected = Archive::open_layout(&location, None, None).expect("opens");
            assert_eq!(detected.layout.name(), "iceberg");
        }
        // Redpanda's hour partitioning interleaves a partition's offsets over two files: one segment.
        let archive = open(&format!("file://{}/wh/kafka/redpanda", dir.path().display()));
        let segments = crate::archive::runtime().block_on(archive.layout.segments(&archive, "t", 0)).expect("lists");
        assert!(segments.iter().any(|s| matches!(&s.transform, Transform::Iceberg(i) if i.files.len() > 1)));
    }

    #[test]
    fn a_named_metadata_file_reads_that_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = interleaved();
        let (first, second) = records.split_at(20);
        let location = write_table(dir.path(), "grows", "aiven", first, &[]);
        let metadata_dir = location.trim_start_matches("file://").to_string() + "/metadata";
        let mut names: Vec<String> = std::fs::read_dir(&metadata_dir)
            .expect("metadata dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".metadata.json"))
            .collect();
        names.sort();
        let old = names.last().expect("a metadata file").clone();
        write_table(dir.path(), "grows", "aiven", second, &[]);
        let now = replay(&open(&location)).expect("replays");
        assert_eq!(now, expected(&records));
        let then = replay(&open(&format!("{location}/metadata/{old}"))).expect("replays the older snapshot");
        assert_eq!(then, expected(first));
        // A filesystem catalog's `v{N}.metadata.json` with `version-hint.text`: the hint decides.
        std::fs::copy(format!("{metadata_dir}/{old}"), format!("{metadata_dir}/v1.metadata.json")).expect("copy");
        std::fs::write(format!("{metadata_dir}/version-hint.text"), "1\n").expect("hint");
        assert_eq!(replay(&open(&location)).expect("replays the hinted version"), expected(first));
        std::fs::write(format!("{metadata_dir}/version-hint.text"), "nonsense").expect("hint");
        let error = replay(&open(&location)).expect_err("a hint that names nothing").to_string();
        assert!(error.contains("version-hint.text"), "{error}");
    }

    #[test]
    fn lossy_tables_are_refused_or_replayed_with_a_warning_as_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = interleaved();
        // A value reshaped into columns cannot give the bytes back: refused, always.
        for vendor in ["redpanda", "automq", "aiven"] {
            let location =
                write_table(dir.path(), &format!("{vendor}_structured"), vendor, &records, &["--mode", "structured"]);
            let error = replay(&open(&location)).expect_err("refused").to_string();
            assert!(error.contains("reshaped into columns") && error.contains("metadata.json"), "{vendor}: {error}");
            let allowed = open(&location).allowing_lossy_tables().expect("an iceberg archive");
            assert!(replay(&allowed).is_err(), "{vendor}: no value bytes, even when lossy tables are allowed");
        }
        // Rows deleted after the fact: refused by default, replayed as they are when allowed.
        let location = write_table(dir.path(), "deleted", "automq", &records, &["--delete-offsets", "0:6,1:4"]);
        match replay(&open(&location)) {
            Err(Error::LossyTable { reasons, .. }) => assert!(reasons.contains("deleted or rewrote rows"), "{reasons}"),
            other => panic!("expected LossyTable, got {other:?}"),
        }
        let allowed = open(&location).allowing_lossy_tables().expect("an iceberg archive");
        let replayed = replay(&allowed).expect("replays when allowed");
        let kept: Vec<(i32, Record)> =
            records.iter().filter(|(p, r)| !matches!((p, r.offset), (0, 6) | (1, 4))).cloned().collect();
        assert_eq!(replayed, expected(&kept));
        let notes = crate::inspect::summarize(&allowed, "t").expect("inspects").partitions[&0].notes.join(" ");
        assert!(notes.contains("lossy table replayed as it is"), "{notes}");
        // A property that lets invalid records be dropped.
        let location = write_table(
            dir.path(),
            "tolerant",
            "automq",
            &records,
            &["--property", "automq.table.topic.errors.tolerance=invalid_data"],
        );
        let error = replay(&open(&location)).expect_err("refused").to_string();
        assert!(error.contains("errors.tolerance=invalid_data") && error.contains("--allow-lossy-table"), "{error}");
    }

    #[test]
    fn a_truncated_or_resized_data_file_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records = interleaved();
        let location = write_table(dir.path(), "cut", "aiven", &records, &["--commits", "2"]);
        let archive = open(&location);
        let segments = crate::archive::runtime().block_on(archive.layout.segments(&archive, "t", 1)).expect("lists");
        let victim = segments.last().expect("a segment").key.clone();
        let path = format!("{}/{victim}", location.trim_start_matches("file://"));
        let bytes = std::fs::read(&path).expect("victim on disk");
        std::fs::write(&path, &bytes[..bytes.len() - 10]).expect("truncate");
        let error = replay(&archive).expect_err("a cut file fails").to_string();
        assert!(error.contains(victim.as_ref()) && error.contains("byte offset"), "{error}");
    }

    #[test]
    fn frames_round_trip_and_damaged_frames_are_errors() {
        let parts = vec![Bytes::from_static(b"abc"), Bytes::new(), Bytes::from_static(b"de")];
        let framed = frame(&parts);
        assert_eq!(unframe("o", &framed, 3).expect("unframes"), parts);
        assert!(unframe("o", &framed, 2).is_err());
        assert!(unframe("o", &framed.slice(..framed.len() - 1), 3).is_err());
        assert!(unframe("o", &framed.slice(..5), 3).is_err());
    }

    #[test]
    fn the_thrift_walk_finds_a_crc_only_where_one_is() {
        // type=0 (i32), uncompressed=10, compressed=10, crc=7: field headers 0x15 (delta 1, i32).
        assert!(thrift_has_field(&[0x15, 0x00, 0x15, 0x14, 0x15, 0x14, 0x15, 0x0e], 4));
        assert!(!thrift_has_field(&[0x15, 0x00, 0x15, 0x14, 0x15, 0x14, 0x1c], 4));
        assert!(!thrift_has_field(&[], 4));
        assert!(!thrift_has_field(&[0x15, 0x80, 0x80], 4));
    }

    /// A small table written once, with page checksums: its first segment (a single data file),
    /// that file's bytes and its name, after checking it translates as listed.
    fn fuzz_table(dir: &std::path::Path) -> (Archive, IcebergSegment, Bytes, String) {
        let records: Vec<(i32, Record)> = history()[0].1.iter().take(12).map(|r| (0, r.clone())).collect();
        let location = write_table(dir, "fuzz", "redpanda", &records, &["--page-checksums"]);
        let archive = open(&location);
        let runtime = crate::archive::runtime();
        let segments = runtime.block_on(archive.layout.segments(&archive, "t", 0)).expect("lists");
        let Transform::Iceberg(iceberg) = &segments[0].transform else { panic!("an iceberg segment") };
        let bytes = runtime.block_on(archive.fetch(&segments[0].key)).expect("fetch");
        let name = segments[0].key.to_string();
        iceberg.translate(&name, &bytes).expect("translates as listed");
        let iceberg = (**iceberg).clone();
        (archive, iceberg, bytes, name)
    }

    /// Skips one thrift compact-protocol value of type `kind` at `at`; the position after it.
    fn skip_value(b: &[u8], at: usize, kind: u8) -> Option<usize> {
        let varint = |mut at: usize| -> Option<(u64, usize)> {
            let (mut v, mut shift) = (0u64, 0);
            loop {
                let byte = *b.get(at)?;
                v |= u64::from(byte & 0x7f) << shift;
                at += 1;
                if byte & 0x80 == 0 {
                    return Some((v, at));
                }
                shift += 7;
            }
        };
        match kind {
            1 | 2 => Some(at),
            3 => Some(at + 1),
            4..=6 => Some(varint(at)?.1),
            7 => Some(at + 8),
            8 => {
                let (len, at) = varint(at)?;
                Some(at + len as usize)
            }
            9 | 10 => {
                let header = *b.get(at)?;
                let (mut n, mut at) = (u64::from(header >> 4), at + 1);
                if n == 15 {
                    (n, at) = varint(at)?;
                }
                for _ in 0..n {
                    at = skip_value(b, at, header & 0x0f)?;
                }
                Some(at)
            }
            11 => {
                let (n, mut at) = varint(at)?;
                if n == 0 {
                    return Some(at);
                }
                let kinds = *b.get(at)?;
                at += 1;
                for _ in 0..n {
                    at = skip_value(b, at, kinds >> 4)?;
                    at = skip_value(b, at, kinds & 0x0f)?;
                }
                Some(at)
            }
            12 => skip_struct(b, at).map(|(end, _)| end),
            _ => None,
        }
    }

    /// Skips a compact-protocol struct at `at`; its end, and its field 3 if an i32 (a page
    /// header's `compressed_page_size`).
    fn skip_struct(b: &[u8], mut at: usize) -> Option<(usize, Option<i64>)> {
        let (mut last, mut third) = (0i16, None);
        loop {
            let header = *b.get(at)?;
            at += 1;
            if header == 0 {
                return Some((at, third));
            }
            let (delta, kind) = ((header >> 4) as i16, header & 0x0f);
            if delta == 0 {
                return None; // long-form field ids do not occur in page headers
            }
            last += delta;
            if last == 3 && kind == 5 {
                let (mut v, mut shift, mut end) = (0u64, 0, at);
                loop {
                    let byte = *b.get(end)?;
                    v |= u64::from(byte & 0x7f) << shift;
                    end += 1;
                    if byte & 0x80 == 0 {
                        break;
                    }
                    shift += 7;
                }
                third = Some(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
            at = skip_value(b, at, kind)?;
        }
    }

    /// The byte ranges of page data (what page checksums cover) of the columns replay reads
    /// (`columns`) in a Parquet file, walking each column chunk's page headers.
    fn page_data(bytes: &Bytes, columns: &Columns) -> Vec<std::ops::Range<usize>> {
        let metadata = ArrowReaderMetadata::load(bytes, reader_options()).expect("parquet");
        let read = [Some(columns.partition), Some(columns.offset), columns.timestamp, columns.key, Some(columns.value)];
        let mut out = Vec::new();
        for group in metadata.metadata().row_groups() {
            for column in group.columns() {
                let info = column.column_descr().self_type().get_basic_info();
                if !(info.has_id() && read.contains(&Some(info.id()))) {
                    continue;
                }
                let (start, len) = column.byte_range();
                let (mut at, end) = (start as usize, (start + len) as usize);
                while at < end {
                    let (header_end, size) = skip_struct(bytes, at).expect("a page header");
                    let size = size.expect("a compressed page size") as usize;
                    out.push(header_end..header_end + size);
                    at = header_end + size;
                }
            }
        }
        out
    }

    #[test]
    fn any_damage_to_a_data_file_is_an_error_naming_it_never_a_panic() {
        use proptest::prelude::*;
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, iceberg, bytes, name) = fuzz_table(dir.path());
        let pages = page_data(&bytes, &iceberg.columns);
        assert!(pages.len() >= 5, "a page per column read at least: {pages:?}");
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(512));
        runner
            .run(&(0..bytes.len(), 1u8.., 0..bytes.len() + 1), |(at, xor, cut)| {
                let mut damaged = bytes.to_vec();
                damaged[at] ^= xor;
                let in_page = pages.iter().any(|p| p.contains(&at));
                for (candidate, checked) in [(damaged.clone(), in_page), (bytes[..cut].to_vec(), cut < bytes.len())] {
                    let files = vec![FileRef { size: candidate.len() as u64, ..iceberg.files[0].clone() }];
                    let same_size = IcebergSegment { files, ..iceberg.clone() };
                    match same_size.translate(&name, &Bytes::from(candidate.clone())) {
                        // Page data of the columns read is checksummed, and a cut file loses its
                        // footer: either is an error. Page headers and the footer have no
                        // checksum (Parquet's limit, stated in the README), nor matter columns
                        // replay does not read: there damage may pass, but never panics.
                        Ok(t) => {
                            prop_assert!(!checked, "damage at {} in checked bytes passed unnoticed", at);
                            let _ = t;
                        }
                        Err(Error::CorruptBatch { object, byte_offset, .. }) => {
                            prop_assert_eq!(&object, &name);
                            prop_assert!(byte_offset <= candidate.len() as u64);
                        }
                        Err(Error::Inconsistent { object, .. }) => prop_assert_eq!(&object, &name),
                        Err(other) => prop_assert!(false, "unexpected error {}", other),
                    }
                }
                Ok(())
            })
            .expect("no damage to checked bytes passes unnoticed");
    }

    #[test]
    fn any_damage_to_the_metadata_or_a_manifest_is_a_named_error_never_a_panic() {
        use proptest::prelude::*;
        let dir = tempfile::tempdir().expect("tempdir");
        let (archive, ..) = fuzz_table(dir.path());
        let objects =
            crate::archive::runtime().block_on(archive.list_objects(&archive.key("metadata"))).expect("lists");
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
        for meta in objects {
            let key = meta.location.clone();
            let bytes = crate::archive::runtime().block_on(archive.fetch(&key)).expect("fetch");
            runner
                .run(&(0..bytes.len(), 1u8.., 0..bytes.len() + 1, any::<bool>()), |(at, xor, cut, flip)| {
                    let candidate = if flip {
                        let mut d = bytes.to_vec();
                        d[at] ^= xor;
                        d
                    } else {
                        bytes[..cut].to_vec()
                    };
                    crate::archive::runtime().block_on(archive.store.put(&key, candidate.into())).expect("put");
                    let fresh = open(&archive.url);
                    // Either read (a damaged byte the format does not check, in a name or a
                    // statistic) or refused with an error; never a panic.
                    let _ = crate::archive::runtime().block_on(fresh.layout.partitions(&fresh, "t"));
                    Ok(())
                })
                .expect("no panic");
            crate::archive::runtime().block_on(archive.store.put(&key, bytes.into())).expect("restore");
        }
    }

    #[test]
    fn rows_the_manifest_bounds_do_not_describe_are_refused_not_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_, iceberg, bytes, name) = fuzz_table(dir.path());
        let (first, last) = iceberg.files[0].ranges[&0];
        for wrong in [
            // An upper bound past the last row: the handoff would skip live offsets.
            BTreeMap::from([(0, (first, last + 5))]),
            // The file holds partition 0's rows, the bounds say partition 1's: they would be lost.
            BTreeMap::from([(1, (first, last))]),
        ] {
            let files = vec![FileRef { ranges: wrong.clone(), ..iceberg.files[0].clone() }];
            let error = IcebergSegment { files, ..iceberg.clone() }.translate(&name, &bytes).expect_err("refused");
            assert!(error.to_string().contains("column bounds say") && error.to_string().contains(&name), "{error}");
        }
    }

    #[test]
    fn timestamps_outside_kafkas_range_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut records = interleaved();
        records[3].1.timestamp = Some(-5);
        let location = write_table(dir.path(), "negative", "automq", &records, &[]);
        let error = replay(&open(&location)).expect_err("refused").to_string();
        assert!(error.contains("outside Kafka's range"), "{error}");
    }

    #[test]
    fn a_cycle_of_snapshot_parents_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().expect("tempdir");
        let location = write_table(dir.path(), "cycle", "aiven", &interleaved(), &["--commits", "2"]);
        let archive = open(&location);
        let runtime = crate::archive::runtime();
        let file = runtime.block_on(metadata_file(&archive, None)).expect("a metadata file");
        let key = archive.key(&file);
        let mut json: serde_json::Value =
            serde_json::from_slice(&runtime.block_on(archive.fetch(&key)).expect("fetch")).expect("json");
        let current = json["current-snapshot-id"].clone();
        for snapshot in json["snapshots"].as_array_mut().expect("snapshots") {
            if snapshot["snapshot-id"] == current {
                snapshot["parent-snapshot-id"] = current.clone();
            }
        }
        runtime.block_on(archive.store.put(&key, serde_json::to_vec(&json).expect("json").into())).expect("put");
        let error = runtime.block_on(open(&location).layout.partitions(&archive, "t")).expect_err("refused");
        assert!(error.to_string().contains("cycle"), "{error}");
    }
}
