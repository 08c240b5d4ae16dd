//! Segments: objects holding a run of Kafka RecordBatch v2 batches of one partition.
//!
//! [`record_batch`] encodes and decodes the batch format itself; [`extent`] reads where batches
//! start and end from their headers alone. Decoding is written here rather than taken from
//! `kafka-protocol` because replay must name the object and the exact byte offset of any damage,
//! bound every allocation by the bytes actually present, and never panic on hostile input; the
//! decoder below is short enough to check by reading, and its fuzz/property tests feed it mutated
//! segments.

pub mod compression;
pub mod extent;
pub mod record_batch;

pub use compression::Codec;
pub use record_batch::{
    control_record, decode_segment, decode_segment_rebased, decode_segment_with, encode_batch, encode_batch_full,
    encode_batch_with, AbortedTxn, BatchOptions, DecodeOptions, SegmentSummary,
};
