//! Kafka RecordBatch v2 (magic 2): the on-disk and on-wire format of Kafka records.
//!
//! ```text
//! offset  field                  type
//!      0  baseOffset             int64
//!      8  batchLength            int32   bytes after this field
//!     12  partitionLeaderEpoch   int32
//!     16  magic                  int8    = 2
//!     17  crc                    uint32  CRC-32C of bytes 21..end
//!     21  attributes             int16   bits 0-2 codec, 3 log-append time, 4 transactional, 5 control
//!     23  lastOffsetDelta        int32
//!     27  baseTimestamp          int64
//!     35  maxTimestamp           int64
//!     43  producerId             int64
//!     51  producerEpoch          int16
//!     53  baseSequence           int32
//!     57  recordCount            int32
//!     61  records...             each: varint length, int8 attributes, varlong timestampDelta,
//!                                varint offsetDelta, varint keyLength + key, varint valueLength +
//!                                value, varint headerCount + headers
//! ```
//! Varints are zig-zag encoded. Every length and count is checked against the bytes that remain
//! before anything is allocated, and every failure names the object and the absolute byte offset.

use bytes::{BufMut, Bytes};
use kappa_engine::{Offset, Record};

use crate::error::{Error, Result};
use crate::segment::compression::{compress, decompress, Codec, MAX_DECOMPRESSED};

const HEADER_LEN: usize = 61;
const CRC_START: usize = 21;
const MAGIC_V2: i8 = 2;
/// Offsets above this are refused, so offset arithmetic never overflows.
pub(crate) const MAX_OFFSET: i64 = i64::MAX / 4;
/// The smallest possible encoded record: length, attributes, three one-byte varints, two null
/// lengths and a zero header count.
const MIN_RECORD_LEN: usize = 7;

/// What one decoded segment held.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentSummary {
    /// Data batches decoded.
    pub batches: usize,
    /// Control batches (transaction markers) skipped.
    pub control_batches: usize,
    /// Records appended to the output.
    pub records: usize,
    /// First and last offset covered by the segment's batches (inclusive), if any.
    pub offsets: Option<(Offset, Offset)>,
    /// Least and largest record timestamp, if any.
    pub timestamps: Option<(i64, i64)>,
    /// The codecs of its data batches, each once, in order of first appearance.
    pub codecs: Vec<Codec>,
    /// Transactional data batches (replayed unless listed as aborted).
    pub transactional_batches: usize,
    /// Data batches skipped because their transaction was aborted.
    pub aborted_batches: usize,
}

/// An aborted transaction, as a Kafka log directory's `.txnindex` lists it: the producer's
/// transactional batches with offsets in `first..=last` are not to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbortedTxn {
    /// The producer.
    pub producer_id: i64,
    /// First offset of the transaction.
    pub first: Offset,
    /// Last offset of the transaction (its abort marker).
    pub last: Offset,
}

/// What the decoder needs to know besides the bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeOptions<'a> {
    /// Records before this offset are skipped.
    pub from: Option<Offset>,
    /// For layouts with relative offsets: the first batch's real base offset.
    pub base: Option<Offset>,
    /// Aborted transactions whose batches are skipped.
    pub aborted: &'a [AbortedTxn],
}

/// Appends one uncompressed RecordBatch holding `records` (consecutive offsets not required, but
/// increasing) to `out`.
///
/// # Panics
/// If `records` is empty or offsets are not increasing: callers build batches from ordered logs.
pub fn encode_batch(records: &[Record], out: &mut Vec<u8>) {
    encode_batch_with(records, Codec::None, out)
}

/// As [`encode_batch`], with the records section compressed by `codec`.
pub fn encode_batch_with(records: &[Record], codec: Codec, out: &mut Vec<u8>) {
    encode_batch_full(records, &BatchOptions { codec, ..BatchOptions::default() }, out)
}

/// How a batch is written: codec, and the producer and transaction fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    /// Compression of the records section.
    pub codec: Codec,
    /// Producer id (-1: none).
    pub producer_id: i64,
    /// Part of a transaction.
    pub transactional: bool,
    /// A control batch (transaction marker).
    pub control: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions { codec: Codec::None, producer_id: -1, transactional: false, control: false }
    }
}

/// A transaction marker record at `offset`: commit or abort, as the broker writes it.
pub fn control_record(offset: Offset, timestamp: i64, commit: bool) -> Record {
    // Key: version 0, type (0 abort, 1 commit); value: version 0, coordinator epoch 0.
    Record {
        offset,
        timestamp: Some(timestamp),
        key: Some(Bytes::from(vec![0, 0, 0, u8::from(commit)])),
        value: Some(Bytes::from(vec![0, 0, 0, 0, 0, 0])),
    }
}

/// As [`encode_batch`], with all of [`BatchOptions`].
pub fn encode_batch_full(records: &[Record], options: &BatchOptions, out: &mut Vec<u8>) {
    let codec = options.codec;
    assert!(!records.is_empty(), "a batch holds at least one record");
    let base_offset = records[0].offset;
    let timestamp = |r: &Record| r.timestamp.unwrap_or(-1);
    let base_ts = timestamp(&records[0]);
    let max_ts = records.iter().map(timestamp).max().unwrap_or(base_ts);
    let start = out.len();
    out.put_i64(base_offset);
    out.put_i32(0); // batchLength, patched below
    out.put_i32(-1); // partitionLeaderEpoch
    out.put_i8(MAGIC_V2);
    out.put_u32(0); // crc, patched below
    let attributes =
        codec.bits() | if options.transactional { 0x10 } else { 0 } | if options.control { 0x20 } else { 0 };
    out.put_i16(attributes); // codec, create time, transactional, control
    let last = records.last().expect("non-empty");
    out.put_i32(i32::try_from(last.offset - base_offset).expect("batch spans fewer than 2^31 offsets"));
    out.put_i64(base_ts);
    out.put_i64(max_ts);
    out.put_i64(options.producer_id);
    out.put_i16(if options.producer_id >= 0 { 0 } else { -1 }); // producerEpoch
    out.put_i32(-1); // baseSequence
    out.put_i32(records.len() as i32);
    let mut section = Vec::new();
    let mut body = Vec::new();
    let mut prev = None;
    for r in records {
        assert!(prev.is_none_or(|p| r.offset > p), "offsets increase within a batch");
        prev = Some(r.offset);
        body.clear();
        body.put_i8(0);
        put_varint(&mut body, timestamp(r) - base_ts);
        put_varint(&mut body, r.offset - base_offset);
        put_bytes(&mut body, r.key.as_deref());
        put_bytes(&mut body, r.value.as_deref());
        put_varint(&mut body, 0); // headers
        put_varint(&mut section, body.len() as i64);
        section.extend_from_slice(&body);
    }
    out.extend_from_slice(&compress(codec, &section));
    let batch_len = (out.len() - start - 12) as i32;
    out[start + 8..start + 12].copy_from_slice(&batch_len.to_be_bytes());
    let crc = crc32c::crc32c(&out[start + CRC_START..]);
    out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// Decodes every batch of the segment `bytes` (object `object`), checking each batch's CRC before
/// reading its contents, and appends its data records (with offset at least `from`) to `out`.
pub fn decode_segment(object: &str, bytes: &Bytes, from: Offset, out: &mut Vec<Record>) -> Result<SegmentSummary> {
    decode_segment_rebased(object, bytes, from, None, out)
}

/// As [`decode_segment`], for layouts whose batches carry offsets relative to the object's key
/// (Tansu writes base offset 0 and keeps the real one in the key): with `base` given, the first
/// batch's base offset is taken to be `base`, and later batches shift alike.
pub fn decode_segment_rebased(
    object: &str,
    bytes: &Bytes,
    from: Offset,
    base: Option<Offset>,
    out: &mut Vec<Record>,
) -> Result<SegmentSummary> {
    decode_segment_with(object, bytes, &DecodeOptions { from: Some(from), base, aborted: &[] }, out)
}

/// Decodes a segment with all of [`DecodeOptions`].
pub fn decode_segment_with(
    object: &str,
    bytes: &Bytes,
    options: &DecodeOptions<'_>,
    out: &mut Vec<Record>,
) -> Result<SegmentSummary> {
    let (from, base) = (options.from.unwrap_or(Offset::MIN), options.base);
    let mut summary = SegmentSummary::default();
    let mut pos = 0usize;
    let mut next_expected: Option<Offset> = None;
    let mut shift: Option<i64> = None;
    while pos < bytes.len() {
        let batch = Cursor { object, bytes, pos, end: bytes.len() };
        let mut header = batch.header()?;
        let delta = *shift.get_or_insert_with(|| base.map_or(0, |b| b.saturating_sub(header.base_offset)));
        header.base_offset = header
            .base_offset
            .checked_add(delta)
            .filter(|b| (0..=MAX_OFFSET).contains(b))
            .ok_or_else(|| batch.corrupt(0, format!("batch base offset {} is impossible", header.base_offset)))?;
        if let Some(expected) = next_expected {
            if header.base_offset < expected {
                return Err(
                    batch.corrupt(0, format!("batch base offset {} overlaps the previous batch", header.base_offset))
                );
            }
        }
        next_expected = Some(header.last_offset() + 1);
        let first = summary.offsets.map_or(header.base_offset, |(f, _)| f);
        summary.offsets = Some((first, header.last_offset()));
        let batch_end = pos + header.total_len;
        let aborted = header.transactional()
            && options.aborted.iter().any(|a| {
                a.producer_id == header.producer_id && a.first <= header.base_offset && header.base_offset <= a.last
            });
        if header.transactional() && !header.is_control() {
            summary.transactional_batches += 1;
        }
        if header.is_control() {
            summary.control_batches += 1;
        } else if aborted {
            summary.aborted_batches += 1;
        } else {
            let before = out.len();
            let section = Cursor { object, bytes, pos: pos + HEADER_LEN, end: batch_end };
            if header.codec == Codec::None {
                decode_records(&section, &header, from, out)?;
            } else {
                decode_compressed(&section, &header, from, out)?;
            }
            if !summary.codecs.contains(&header.codec) {
                summary.codecs.push(header.codec);
            }
            summary.batches += 1;
            summary.records += out.len() - before;
            for r in &out[before..] {
                let ts = r.timestamp.unwrap_or(-1);
                summary.timestamps = Some(summary.timestamps.map_or((ts, ts), |(lo, hi)| (lo.min(ts), hi.max(ts))));
            }
        }
        pos = batch_end;
    }
    Ok(summary)
}

struct Header {
    base_offset: i64,
    producer_id: i64,
    codec: Codec,
    total_len: usize,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    record_count: usize,
}

impl Header {
    fn last_offset(&self) -> Offset {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
    fn transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
}

/// A bounds-checked reader over `bytes[pos..end]` that reports absolute byte offsets.
struct Cursor<'a> {
    object: &'a str,
    bytes: &'a Bytes,
    pos: usize,
    end: usize,
}

impl Cursor<'_> {
    fn corrupt(&self, relative: usize, reason: String) -> Error {
        // A field that would start past the end is reported at the end: that is where bytes are missing.
        let byte_offset = (self.pos + relative).min(self.bytes.len()) as u64;
        Error::CorruptBatch { object: self.object.to_string(), byte_offset, reason }
    }

    fn fixed<const N: usize>(&self, at: usize) -> Result<[u8; N]> {
        self.bytes
            .get(self.pos + at..self.pos + at + N)
            .filter(|_| self.pos + at + N <= self.end)
            .map(|s| s.try_into().expect("length checked"))
            .ok_or_else(|| self.corrupt(at, format!("truncated: needs {N} bytes, the object ends first")))
    }

    fn header(&self) -> Result<Header> {
        let i64_at = |at| self.fixed::<8>(at).map(i64::from_be_bytes);
        let i32_at = |at| self.fixed::<4>(at).map(i32::from_be_bytes);
        let base_offset = i64_at(0)?;
        let batch_len = i32_at(8)?;
        let magic = self.fixed::<1>(16)?[0] as i8;
        if magic != MAGIC_V2 {
            return Err(Error::UnsupportedFormat {
                object: self.object.to_string(),
                byte_offset: (self.pos + 16) as u64,
                what: format!("record batch magic {magic} (only magic 2, Kafka 0.11+, is read)"),
            });
        }
        let remaining = self.end - self.pos;
        if batch_len < (HEADER_LEN - 12) as i32 || batch_len as usize + 12 > remaining {
            return Err(self.corrupt(8, format!("batch length {batch_len} does not fit the {remaining} bytes left")));
        }
        let total_len = batch_len as usize + 12;
        let stored_crc = u32::from_be_bytes(self.fixed::<4>(17)?);
        let actual_crc = crc32c::crc32c(&self.bytes[self.pos + CRC_START..self.pos + total_len]);
        if stored_crc != actual_crc {
            return Err(
                self.corrupt(17, format!("CRC-32C mismatch: stored {stored_crc:#010x}, computed {actual_crc:#010x}"))
            );
        }
        let attributes = i16::from_be_bytes(self.fixed::<2>(21)?);
        let codec = Codec::from_attributes(attributes).map_err(|n| Error::UnsupportedFormat {
            object: self.object.to_string(),
            byte_offset: (self.pos + 21) as u64,
            what: format!("unknown compression codec {n}"),
        })?;
        let last_offset_delta = i32_at(23)?;
        let record_count = i32_at(57)?;
        let body = total_len - HEADER_LEN;
        if last_offset_delta < 0
            || record_count < 0
            || (codec == Codec::None && record_count as usize * MIN_RECORD_LEN > body)
        {
            return Err(self.corrupt(
                57,
                format!("{record_count} records (last offset delta {last_offset_delta}) cannot fit in {body} bytes"),
            ));
        }
        Ok(Header {
            base_offset,
            producer_id: i64_at(43)?,
            codec,
            total_len,
            attributes,
            last_offset_delta,
            base_timestamp: i64_at(27)?,
            max_timestamp: i64_at(35)?,
            record_count: record_count as usize,
        })
    }

    /// Reads a zig-zag varint at `*at` (relative), advancing it.
    fn varint(&self, at: &mut usize) -> Result<i64> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.bytes.get(self.pos + *at).filter(|_| self.pos + *at < self.end) else {
                return Err(self.corrupt(*at, "truncated varint".into()));
            };
            *at += 1;
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(self.corrupt(*at - 10, "varint longer than 10 bytes".into()))
    }

    fn nullable_bytes(&self, at: &mut usize, limit: usize) -> Result<Option<Bytes>> {
        let start = *at;
        let len = self.varint(at)?;
        if len == -1 {
            return Ok(None);
        }
        if len < 0 || (*at as i64).saturating_add(len) > limit as i64 {
            return Err(self.corrupt(start, format!("length {len} points past the end of the record")));
        }
        let from = self.pos + *at;
        *at += len as usize;
        Ok(Some(self.bytes.slice(from..from + len as usize)))
    }
}

/// Decompresses a batch's records section and decodes it. Damage inside the decompressed bytes is
/// reported at the section's start in the object, with the position within the decompressed bytes.
fn decode_compressed(section: &Cursor<'_>, header: &Header, from: Offset, out: &mut Vec<Record>) -> Result<()> {
    let codec = header.codec.name();
    let compressed = &section.bytes[section.pos..section.end];
    let inflated = decompress(section.object, section.pos as u64, header.codec, compressed, MAX_DECOMPRESSED)?;
    let inflated = Bytes::from(inflated);
    let inner = Cursor { object: section.object, bytes: &inflated, pos: 0, end: inflated.len() };
    decode_records(&inner, header, from, out).map_err(|error| match error {
        Error::CorruptBatch { byte_offset, reason, .. } => {
            section.corrupt(0, format!("in the {codec}-decompressed records, at their byte {byte_offset}: {reason}"))
        }
        other => other,
    })
}

fn decode_records(body: &Cursor<'_>, header: &Header, from: Offset, out: &mut Vec<Record>) -> Result<()> {
    let log_append_time = header.attributes & 0x08 != 0;
    let mut at = 0usize;
    let len = body.end - body.pos;
    if header.record_count * MIN_RECORD_LEN > len {
        return Err(body.corrupt(0, format!("{} records cannot fit in {len} bytes", header.record_count)));
    }
    let mut prev_delta = -1i64;
    for _ in 0..header.record_count {
        let record_start = at;
        let record_len = body.varint(&mut at)?;
        if record_len < (MIN_RECORD_LEN - 1) as i64 || (at as i64).saturating_add(record_len) > len as i64 {
            return Err(
                body.corrupt(record_start, format!("record length {record_len} points past the end of the batch"))
            );
        }
        let limit = at + record_len as usize;
        at += 1; // record attributes, unused
        let ts_delta = body.varint(&mut at)?;
        let delta_at = at;
        let offset_delta = body.varint(&mut at)?;
        if offset_delta <= prev_delta || offset_delta > i64::from(header.last_offset_delta) {
            return Err(
                body.corrupt(delta_at, format!("offset delta {offset_delta} out of order or past the batch's last"))
            );
        }
        prev_delta = offset_delta;
        let key = body.nullable_bytes(&mut at, limit)?;
        let value = body.nullable_bytes(&mut at, limit)?;
        let headers_at = at;
        let headers = body.varint(&mut at)?;
        if headers < 0 || headers.saturating_mul(2) > limit.saturating_sub(at) as i64 {
            return Err(body.corrupt(headers_at, format!("{headers} headers cannot fit in the record")));
        }
        for _ in 0..headers {
            body.nullable_bytes(&mut at, limit)?;
            body.nullable_bytes(&mut at, limit)?;
        }
        if at != limit {
            return Err(body.corrupt(record_start, format!("record length {record_len} disagrees with its fields")));
        }
        let offset = header.base_offset + offset_delta;
        if offset >= from {
            let timestamp =
                if log_append_time { header.max_timestamp } else { header.base_timestamp.wrapping_add(ts_delta) };
            out.push(Record { offset, timestamp: Some(timestamp), key, value });
        }
    }
    if at != len {
        return Err(body.corrupt(at, format!("{} bytes after the batch's last record", len - at)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(offset: i64, ts: i64, value: &str) -> Record {
        Record {
            offset,
            timestamp: Some(ts),
            key: Some(Bytes::from(format!("k{offset}"))),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
        }
    }

    fn segment() -> (Vec<Record>, Bytes) {
        let records: Vec<_> = (0..20).map(|i| record(100 + i, 1_000 - i * 7, &format!("v{i}"))).collect();
        let mut buf = Vec::new();
        encode_batch(&records[..12], &mut buf);
        encode_batch(&records[12..], &mut buf);
        (records, Bytes::from(buf))
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let (records, bytes) = segment();
        let mut out = Vec::new();
        let summary = decode_segment("seg", &bytes, 0, &mut out).expect("decodes");
        assert_eq!(out, records);
        assert_eq!(summary.batches, 2);
        assert_eq!(summary.offsets, Some((100, 119)));
        assert_eq!(summary.timestamps, Some((1_000 - 19 * 7, 1_000)));
    }

    #[test]
    fn compressed_batches_decode_to_the_same_records() {
        let (records, _) = segment();
        for codec in crate::segment::compression::CODECS {
            let mut buf = Vec::new();
            encode_batch_with(&records[..7], codec, &mut buf);
            encode_batch_with(&records[7..], codec, &mut buf);
            let mut out = Vec::new();
            let summary = decode_segment("seg", &Bytes::from(buf), 0, &mut out).expect("decodes");
            assert_eq!(out, records, "{codec:?}");
            assert_eq!(summary.codecs, vec![codec]);
        }
    }

    #[test]
    fn relative_base_offsets_are_rebased_to_the_key() {
        let (records, _) = segment();
        let relative: Vec<Record> = records.iter().map(|r| Record { offset: r.offset - 100, ..r.clone() }).collect();
        let mut buf = Vec::new();
        encode_batch(&relative, &mut buf);
        let mut out = Vec::new();
        decode_segment_rebased("seg", &Bytes::from(buf), 0, Some(100), &mut out).expect("decodes");
        assert_eq!(out, records);
    }

    #[test]
    fn damage_inside_compressed_records_names_the_batch() {
        let (records, _) = segment();
        let mut buf = Vec::new();
        encode_batch_with(&records, Codec::Gzip, &mut buf);
        let last = buf.len() - 5; // inside the gzip trailer: the CRC still matches the damaged bytes below
        buf[last] ^= 0xff;
        let crc = crc32c::crc32c(&buf[CRC_START..]);
        buf[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = decode_segment("seg", &Bytes::from(buf), 0, &mut Vec::new()).expect_err("damaged");
        assert!(matches!(err, Error::CorruptBatch { byte_offset: 61, .. }), "{err}");
    }

    #[test]
    fn decoding_from_an_offset_skips_earlier_records() {
        let (records, bytes) = segment();
        let mut out = Vec::new();
        decode_segment("seg", &bytes, 115, &mut out).expect("decodes");
        assert_eq!(out, records[15..]);
    }

    #[test]
    fn flipped_byte_names_object_and_offset() {
        let (_, bytes) = segment();
        let mut damaged = bytes.to_vec();
        damaged[80] ^= 0x01;
        let err = decode_segment("topics/likes/3.seg", &Bytes::from(damaged), 0, &mut Vec::new()).expect_err("damaged");
        match err {
            Error::CorruptBatch { object, byte_offset, reason } => {
                assert_eq!(object, "topics/likes/3.seg");
                assert_eq!(byte_offset, 17, "the first batch's CRC field");
                assert!(reason.contains("CRC"), "{reason}");
            }
            other => panic!("expected a corrupt batch, got {other:?}"),
        }
    }

    #[test]
    fn truncation_is_an_error_at_the_batch_that_is_cut() {
        let (_, bytes) = segment();
        let first_len = 12 + i32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let cut = bytes.slice(..bytes.len() - 3);
        let err = decode_segment("seg", &cut, 0, &mut Vec::new()).expect_err("truncated");
        assert!(matches!(err, Error::CorruptBatch { byte_offset, .. } if byte_offset == first_len as u64 + 8), "{err}");
    }

    proptest! {
        /// Whatever bytes are flipped, inserted or cut, decoding returns (never panics), and
        /// either recovers the original records or reports an offset inside the object.
        #[test]
        fn mutated_segments_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 0..4),
                                        cut in any::<prop::sample::Index>(), do_cut in any::<bool>()) {
            let (records, bytes) = segment();
            let mut damaged = bytes.to_vec();
            for (at, mask) in &flips {
                let i = at.index(damaged.len());
                damaged[i] ^= mask;
            }
            if do_cut {
                damaged.truncate(cut.index(damaged.len()));
            }
            let len = damaged.len() as u64;
            let mut out = Vec::new();
            match decode_segment("seg", &Bytes::from(damaged), 0, &mut out) {
                Ok(_) => if flips.is_empty() && !do_cut { prop_assert_eq!(out, records) },
                Err(Error::CorruptBatch { byte_offset, .. }) | Err(Error::UnsupportedFormat { byte_offset, .. }) =>
                    prop_assert!(byte_offset <= len),
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// Inputs the fuzz target found; each must fail cleanly, not panic.
    #[test]
    fn fuzz_found_inputs_fail_cleanly() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/regressions exists") {
            let data = std::fs::read(entry.expect("entry").path()).expect("readable");
            let (mode, body) = data.split_first().unwrap_or((&0, &data));
            let aborted = [AbortedTxn { producer_id: 1, first: 0, last: 1 << 20 }];
            let options = DecodeOptions {
                from: Some(i64::from(*mode & 0x0f)),
                base: (mode & 0x10 != 0).then_some(1_000),
                aborted: if mode & 0x20 != 0 { &aborted } else { &[] },
            };
            let _ = decode_segment_with("fuzz", &Bytes::copy_from_slice(body), &options, &mut Vec::new());
            seen += 1;
        }
        assert!(seen > 0);
    }
}
