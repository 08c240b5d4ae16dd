//! Topic archives in object storage, and replaying them into Kappa.
//!
//! Kafka-compatible platforms keep a topic's whole history in object storage. This crate reads
//! such archives back as a Kappa input and continues live on the broker at exactly the next offset
//! of every partition, so one pipeline serves both backfill and live.
//!
//! The data path, top to bottom:
//! 1. [`archive`]: an object store (`file://`, `s3://`, `memory://`) plus a [`layout`] that maps
//!    keys to topic, partition and offsets.
//! 2. [`segment`]: RecordBatch v2 decoding, CRC-checked, naming object and byte offset on damage.
//! 3. [`source`]: the replay source, fetching ahead in parallel with bounded memory.
//! 4. [`handoff`]: the archive-to-live switch, and the check that no offset falls between.
//!
//! The archive tools (`kappa archive write`, `kappa archive inspect`) are [`writer`] and [`inspect`].
//!
//! # Examples
//!
//! Replay an archive in memory:
//!
//! ```
//! use kappa_engine::{execute, ClusterConfig, JobOptions, MemorySink, Record, Sources};
//! use kappa_replay::{segment::encode_batch, Archive, KappaLayout, ReplaySource};
//!
//! let archive = Archive::open("memory://doc-example").unwrap();
//! let records: Vec<Record> = (0..3)
//!     .map(|i| Record { offset: i, timestamp: Some(i * 1000), key: None, value: Some(vec![b'x'; i as usize].into()) })
//!     .collect();
//! let mut bytes = Vec::new();
//! encode_batch(&records, &mut bytes);
//! let key = KappaLayout::segment_key(&archive, "t", 0, 0, 3);
//! use object_store::ObjectStoreExt;
//! kappa_replay::archive::runtime().block_on(archive.store.put(&key, bytes.into())).unwrap();
//!
//! let sink = MemorySink::new();
//! let out = sink.clone();
//! let replay = ReplaySource::open(archive, "t").unwrap();
//! execute(&ClusterConfig::threads(1), JobOptions::default(), Sources::new().with("t", replay), move |ctx| {
//!     let lengths = ctx.input("t", |r| Ok::<_, std::convert::Infallible>((r.value.as_ref().map_or(0, |v| v.len()), r.offset as u64)))?;
//!     ctx.output(lengths, out.clone());
//!     Ok(())
//! })
//! .unwrap();
//! assert_eq!(sink.accumulated(), vec![(0, 1), (1, 1), (2, 1)]);
//! ```
#![forbid(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod archive;
mod error;
pub mod handoff;
pub mod inspect;
pub mod layout;
pub mod segment;
pub mod source;
pub mod writer;

pub use archive::Archive;
pub use error::{Error, Result};
pub use handoff::{check_handoff, Handoff};
pub use layout::{
    ArchiveLayout, KafkaLogDirLayout, KappaLayout, Kip405Layout, RedpandaLayout, SegmentRef, TansuLayout,
};
pub use source::ReplaySource;
