//! The record codecs of RecordBatch v2: none, gzip, snappy, lz4, zstd.
//!
//! Decompression is bounded: a batch that would inflate past [`MAX_DECOMPRESSED`] is refused
//! rather than allowed to exhaust memory, whatever its header claims.
//!
//! # Speed
//! A replay decompresses one batch at a time, typically a few tens of kilobytes. At that size
//! the setup dominates: a zstd streaming decoder allocates a context and its window per batch,
//! and `read_to_end` grows its output by doubling. So zstd decompresses in one call with a
//! context kept per thread, into a buffer sized from the frame's stated content size, and the
//! streaming codecs start from a capacity guessed from the input.

use std::cell::RefCell;
use std::io::Read;

use zstd::zstd_safe;

use crate::error::{Error, Result};

/// Largest decompressed records section accepted from one batch.
pub const MAX_DECOMPRESSED: usize = 256 << 20;

/// A batch's compression codec (attributes bits 0–2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Uncompressed.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// Snappy, raw or in the xerial framing the Java client writes.
    Snappy,
    /// LZ4 frame format.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl Codec {
    /// The codec of a batch with these attributes, or the unknown codec number.
    pub fn from_attributes(attributes: i16) -> Result<Codec, i16> {
        match attributes & 0x07 {
            0 => Ok(Codec::None),
            1 => Ok(Codec::Gzip),
            2 => Ok(Codec::Snappy),
            3 => Ok(Codec::Lz4),
            4 => Ok(Codec::Zstd),
            other => Err(other),
        }
    }

    /// The attributes bits of this codec.
    pub fn bits(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::Snappy => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    /// The codec's name, as Kafka spells it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Snappy => "snappy",
            Codec::Lz4 => "lz4",
            Codec::Zstd => "zstd",
        }
    }
}

/// Every codec, for tests and tools.
pub const CODECS: [Codec; 5] = [Codec::None, Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd];

/// Where compressed bytes come from, so that a failure names the object and byte offset.
struct Site<'a> {
    object: &'a str,
    byte_offset: u64,
    codec: Codec,
}

impl Site<'_> {
    fn fail(&self, why: impl std::fmt::Display) -> Error {
        Error::CorruptBatch {
            object: self.object.to_string(),
            byte_offset: self.byte_offset,
            reason: format!("{} data does not decompress: {why}", self.codec.name()),
        }
    }

    fn read_bounded(&self, mut reader: impl Read, limit: usize, input_len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(first_guess(input_len, limit));
        (&mut reader).take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| self.fail(e))?;
        if out.len() > limit {
            return Err(self.fail(format_args!("decompresses to more than {limit} bytes")));
        }
        Ok(out)
    }

    fn snappy_block(&self, input: &[u8], limit: usize) -> Result<Vec<u8>> {
        let len = snap::raw::decompress_len(input).map_err(|e| self.fail(e))?;
        if len > limit {
            return Err(self.fail(format_args!("snappy block claims {len} bytes, more than the {limit} allowed")));
        }
        snap::raw::Decoder::new().decompress_vec(input).map_err(|e| self.fail(e))
    }
}

/// A first output capacity for `input_len` compressed bytes: records compress about 4 to 8
/// times; a guess too small costs a reallocation (streaming codecs) or a retry (zstd).
fn first_guess(input_len: usize, limit: usize) -> usize {
    input_len.saturating_mul(8).max(64 << 10).min(limit.max(1))
}

thread_local! {
    /// One zstd decompression context per thread, reused by every batch the thread decodes.
    static ZSTD: RefCell<Option<zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

/// zstd's error for an output buffer too small. Its functions return an error as the negated
/// code (`ERR_isError`), a stable part of zstd's API.
fn zstd_too_small(code: usize) -> bool {
    code == 0usize.wrapping_sub(zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_dstSize_tooSmall as usize)
}

impl Site<'_> {
    /// One call into a per-thread context. The output is sized from the frame's content size
    /// when it states one (bulk writers do) and from a guess otherwise (streaming writers, like
    /// the Java client's, leave it out), doubling on "too small" up to `limit`; several frames
    /// back to back decode in the same call.
    fn zstd(&self, input: &[u8], limit: usize) -> Result<Vec<u8>> {
        let refused = || self.fail(format_args!("decompresses to more than {limit} bytes"));
        let mut capacity = match zstd_safe::get_frame_content_size(input) {
            Ok(Some(size)) if size > limit as u64 => return Err(refused()),
            Ok(Some(size)) => size as usize,
            _ => first_guess(input.len(), limit),
        };
        ZSTD.with(|context| {
            let mut context = context.borrow_mut();
            let context = context.get_or_insert_with(zstd_safe::DCtx::create);
            loop {
                let mut out = Vec::with_capacity(capacity);
                match context.decompress(&mut out, input) {
                    Ok(_) => return Ok(out),
                    Err(code) if zstd_too_small(code) && capacity < limit => {
                        capacity = capacity.saturating_mul(2).min(limit);
                    }
                    Err(code) if zstd_too_small(code) => return Err(refused()),
                    Err(code) => return Err(self.fail(zstd_safe::get_error_name(code))),
                }
            }
        })
    }
}

const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// Decompresses `input` (which starts at `byte_offset` in the object `object`), producing at most
/// `limit` bytes; a failure is a [`Error::CorruptBatch`] naming the object and that offset.
pub fn decompress(object: &str, byte_offset: u64, codec: Codec, input: &[u8], limit: usize) -> Result<Vec<u8>> {
    let site = Site { object, byte_offset, codec };
    match codec {
        Codec::None => Ok(input.to_vec()),
        Codec::Gzip => site.read_bounded(flate2::read::GzDecoder::new(input), limit, input.len()),
        Codec::Lz4 => site.read_bounded(lz4_flex::frame::FrameDecoder::new(input), limit, input.len()),
        Codec::Zstd => site.zstd(input, limit),
        Codec::Snappy if input.starts_with(XERIAL_MAGIC) => {
            // Xerial framing: 8-byte magic, two 4-byte versions, then (u32 length, block)*.
            let mut out = Vec::new();
            let mut rest = input.get(16..).ok_or_else(|| site.fail("truncated xerial snappy header"))?;
            while !rest.is_empty() {
                let len_bytes: [u8; 4] = rest
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| site.fail("truncated xerial chunk length"))?;
                let len = u32::from_be_bytes(len_bytes) as usize;
                let block = rest
                    .get(4..)
                    .and_then(|r| r.get(..len))
                    .ok_or_else(|| site.fail("xerial chunk length points past the end"))?;
                out.extend(site.snappy_block(block, limit.saturating_sub(out.len()))?);
                rest = &rest[4 + len..];
            }
            Ok(out)
        }
        Codec::Snappy => site.snappy_block(input, limit),
    }
}

/// Compresses a records section (for writing fixtures and compressed archives).
pub fn compress(codec: Codec, input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    match codec {
        Codec::None => input.to_vec(),
        Codec::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(input).expect("writing to memory");
            enc.finish().expect("writing to memory")
        }
        Codec::Snappy => snap::raw::Encoder::new().compress_vec(input).expect("snappy compresses any input"),
        Codec::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(input).expect("writing to memory");
            enc.finish().expect("writing to memory")
        }
        Codec::Zstd => zstd::bulk::compress(input, 1).expect("zstd compresses any input"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let input: Vec<u8> = (0..50_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        for codec in CODECS {
            let packed = compress(codec, &input);
            assert_eq!(decompress("x", 0, codec, &packed, MAX_DECOMPRESSED).expect("decompresses"), input, "{codec:?}");
        }
    }

    #[test]
    fn inflation_past_the_limit_is_refused() {
        let zeros = vec![0u8; 1 << 20];
        for codec in [Codec::Gzip, Codec::Snappy, Codec::Lz4, Codec::Zstd] {
            let packed = compress(codec, &zeros);
            let err = decompress("x", 0, codec, &packed, 1000).expect_err("over the limit").to_string();
            assert!(err.contains("1000"), "{codec:?}: {err}");
        }
    }

    #[test]
    fn zstd_frames_without_a_content_size_and_several_frames_back_to_back_are_read() {
        let input: Vec<u8> = (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        // A streaming encoder does not state the content size; the output outgrows every guess.
        let streamed = zstd::stream::encode_all(&input[..], 1).expect("compresses");
        assert_eq!(zstd_safe::get_frame_content_size(&streamed).ok().flatten(), None, "no content size stated");
        assert_eq!(decompress("x", 0, Codec::Zstd, &streamed, MAX_DECOMPRESSED).expect("decompresses"), input);
        // Two frames: the first's stated size is too small for both.
        let mut two = compress(Codec::Zstd, &input[..1000]);
        two.extend(compress(Codec::Zstd, &input[1000..]));
        assert_eq!(decompress("x", 0, Codec::Zstd, &two, MAX_DECOMPRESSED).expect("decompresses"), input);
        // Past the limit without a stated size, and damage, are still errors naming the object.
        let err = decompress("obj", 7, Codec::Zstd, &streamed, 100_000).expect_err("over the limit").to_string();
        assert!(err.contains("more than 100000 bytes") && err.contains("obj"), "{err}");
        let mut damaged = streamed.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        damaged.truncate(middle + 10);
        let err = decompress("obj", 7, Codec::Zstd, &damaged, MAX_DECOMPRESSED).expect_err("damaged").to_string();
        assert!(err.contains("zstd data does not decompress"), "{err}");
    }

    #[test]
    fn xerial_framed_snappy_is_read() {
        let input = b"hello hello hello kappa".repeat(100);
        let block = snap::raw::Encoder::new().compress_vec(&input).expect("compresses");
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend([0, 0, 0, 1, 0, 0, 0, 1]);
        framed.extend((block.len() as u32).to_be_bytes());
        framed.extend(&block);
        assert_eq!(decompress("x", 0, Codec::Snappy, &framed, MAX_DECOMPRESSED).expect("reads"), input);
    }
}
