//! Where batches start and end, read from their headers alone, without decoding records.
//!
//! Layouts whose keys do not give a segment's end offset find it here: a batch header says the
//! batch's base offset, its length and its last offset delta, so walking headers from one batch to
//! the next gives the offset after the last batch. The walk trusts no field: a length that points
//! past the object, a negative delta or an offset that would overflow is a named error naming the
//! object and the byte offset of the field, never a panic.

use crate::error::{Error, Result};

/// Bytes of a RecordBatch v2 header (everything before the records).
pub const HEADER_LEN: usize = 61;

/// One batch, as its header describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchExtent {
    /// The header's base offset field (relative to the key in Tansu's objects).
    pub base_offset: i64,
    /// The offset after the batch's last: base offset + last offset delta + 1.
    pub next_offset: i64,
    /// Bytes of the whole batch, header included.
    pub total_len: u64,
}

/// Reads the header `header` (at least [`HEADER_LEN`] bytes) of a batch at `byte_offset` in
/// `object`. The CRC is not checked: see [`walk_batches`] for that.
pub fn batch_extent(object: &str, header: &[u8], byte_offset: u64) -> Result<BatchExtent> {
    let corrupt = |at: u64, reason: String| Error::CorruptBatch {
        object: object.to_string(),
        byte_offset: byte_offset.saturating_add(at),
        reason,
    };
    let Some(header) = header.get(..HEADER_LEN) else {
        return Err(corrupt(
            header.len() as u64,
            format!("truncated: {} bytes, shorter than a {HEADER_LEN}-byte batch header", header.len()),
        ));
    };
    let i64_at = |at: usize| i64::from_be_bytes(header[at..at + 8].try_into().expect("8 bytes of a sliced header"));
    let i32_at = |at: usize| i32::from_be_bytes(header[at..at + 4].try_into().expect("4 bytes of a sliced header"));
    let (base_offset, batch_len, magic, delta) = (i64_at(0), i32_at(8), header[16] as i8, i32_at(23));
    if magic != 2 {
        return Err(Error::UnsupportedFormat {
            object: object.to_string(),
            byte_offset: byte_offset.saturating_add(16),
            what: format!("record batch magic {magic} (only magic 2, Kafka 0.11+, is read)"),
        });
    }
    if batch_len < (HEADER_LEN - 12) as i32 {
        return Err(corrupt(8, format!("batch length {batch_len} is shorter than a batch header")));
    }
    if base_offset < 0 {
        return Err(corrupt(0, format!("negative base offset {base_offset}")));
    }
    if delta < 0 {
        return Err(corrupt(23, format!("negative last offset delta {delta}")));
    }
    let next_offset =
        base_offset.checked_add(i64::from(delta)).and_then(|last| last.checked_add(1)).ok_or_else(|| {
            corrupt(0, format!("base offset {base_offset} plus last offset delta {delta} overflows a 64-bit offset"))
        })?;
    Ok(BatchExtent { base_offset, next_offset, total_len: 12 + batch_len as u64 })
}

/// What a walk over a run of batches found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Walk {
    /// The first batch's base offset field.
    pub first_base: i64,
    /// The offset after the last batch.
    pub next_offset: i64,
    /// Batches walked.
    pub batches: usize,
}

/// Walks the batch headers of `bytes`, which start at byte `origin` of `object`, to the end:
/// every batch must lie wholly inside `bytes`. With `check_crc`, each batch's CRC-32C is checked
/// too. `Ok(None)` when `bytes` is empty.
pub fn walk_batches(object: &str, bytes: &[u8], origin: u64, check_crc: bool) -> Result<Option<Walk>> {
    let mut pos = 0usize;
    let mut walk: Option<Walk> = None;
    while pos < bytes.len() {
        let at = origin.saturating_add(pos as u64);
        let extent = batch_extent(object, &bytes[pos..], at)?;
        let end = usize::try_from(extent.total_len).ok().and_then(|len| pos.checked_add(len));
        let Some(end) = end.filter(|&end| end <= bytes.len()) else {
            return Err(Error::CorruptBatch {
                object: object.to_string(),
                byte_offset: at.saturating_add(8),
                reason: format!(
                    "batch of {} bytes does not fit the {} bytes left",
                    extent.total_len,
                    bytes.len() - pos
                ),
            });
        };
        if check_crc {
            let stored = u32::from_be_bytes(bytes[pos + 17..pos + 21].try_into().expect("4 bytes of a header"));
            let actual = crc32c::crc32c(&bytes[pos + 21..end]);
            if stored != actual {
                return Err(Error::CorruptBatch {
                    object: object.to_string(),
                    byte_offset: at.saturating_add(17),
                    reason: format!("CRC-32C mismatch: stored {stored:#010x}, computed {actual:#010x}"),
                });
            }
        }
        if let Some(previous) = walk {
            if extent.base_offset < previous.next_offset {
                return Err(Error::CorruptBatch {
                    object: object.to_string(),
                    byte_offset: at,
                    reason: format!("batch base offset {} overlaps the previous batch", extent.base_offset),
                });
            }
        }
        walk = Some(Walk {
            first_base: walk.map_or(extent.base_offset, |w| w.first_base),
            next_offset: extent.next_offset,
            batches: walk.map_or(0, |w| w.batches) + 1,
        });
        pos = end;
    }
    Ok(walk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::encode_batch;
    use bytes::Bytes;
    use kappa_engine::Record;
    use proptest::prelude::*;

    fn segment(base: i64, n: i64) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in (base..base + n).collect::<Vec<_>>().chunks(3) {
            let records: Vec<Record> = chunk
                .iter()
                .map(|&o| Record { offset: o, timestamp: Some(o), key: None, value: Some(Bytes::from("v")) })
                .collect();
            encode_batch(&records, &mut out);
        }
        out
    }

    #[test]
    fn walk_finds_the_offset_after_the_last_batch() {
        let bytes = segment(40, 10);
        let walk = walk_batches("x", &bytes, 0, true).expect("walks").expect("batches");
        assert_eq!(walk, Walk { first_base: 40, next_offset: 50, batches: 4 });
        assert_eq!(walk_batches("x", &[], 0, true).expect("empty walks"), None);
    }

    #[test]
    fn base_offset_near_i64_max_is_a_named_error_not_an_overflow() {
        let mut bytes = segment(0, 3);
        bytes[..8].copy_from_slice(&(i64::MAX - 1).to_be_bytes());
        let err = walk_batches("seg.log", &bytes, 1000, false).expect_err("overflows");
        assert!(matches!(err, Error::CorruptBatch { byte_offset: 1000, .. }), "{err}");
        assert!(err.to_string().contains("seg.log") && err.to_string().contains("overflows"), "{err}");
    }

    #[test]
    fn lengths_past_the_end_and_truncated_headers_are_named_errors() {
        let bytes = segment(0, 3);
        let err = walk_batches("x", &bytes[..bytes.len() - 1], 0, false).expect_err("truncated batch");
        assert!(matches!(err, Error::CorruptBatch { byte_offset: 8, .. }), "{err}");
        let err = walk_batches("x", &bytes[..30], 0, false).expect_err("truncated header");
        assert!(matches!(err, Error::CorruptBatch { byte_offset: 30, .. }), "{err}");
        let mut negative = bytes.clone();
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(walk_batches("x", &negative, 0, false), Err(Error::CorruptBatch { byte_offset: 8, .. })));
        let mut flipped = bytes;
        flipped[40] ^= 1;
        assert!(walk_batches("x", &flipped, 0, false).is_ok(), "without CRC checks a body flip passes");
        assert!(matches!(walk_batches("x", &flipped, 0, true), Err(Error::CorruptBatch { byte_offset: 17, .. })));
    }

    proptest! {
        #[test]
        fn any_bytes_walk_or_fail_with_a_named_error(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            match walk_batches("x", &bytes, 0, true) {
                Ok(_) | Err(Error::CorruptBatch { .. }) | Err(Error::UnsupportedFormat { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected error {other}"),
            }
        }
    }
}
