//! Kafka's remote log metadata (KIP-405): which uploaded segments Kafka considers valid.
//!
//! A broker with tiered storage records every upload's life in the `__remote_log_metadata` topic.
//! Each record's value is framed as three unsigned varints (frame version 1, apiKey, version)
//! followed by the body in Kafka's flexible-version encoding (compact strings and arrays, 16-byte
//! UUIDs, big-endian integers, a tagged-field section closing every struct):
//!
//! - apiKey 0, `RemoteLogSegmentMetadataRecord`: segment id (topic name, topic id, partition,
//!   segment UUID), start and end offsets, broker id, max and event timestamps, leader epochs
//!   `[epoch, start offset]`, size, custom metadata, state;
//! - apiKey 1, `RemoteLogSegmentMetadataUpdateRecord`: segment id, broker id, event timestamp,
//!   custom metadata, new state;
//! - apiKey 2, `RemotePartitionDeleteMetadataRecord`: topic partition, broker id, event timestamp,
//!   delete state.
//!
//! Segment states: 0 COPY_SEGMENT_STARTED, 1 COPY_SEGMENT_FINISHED, 2 DELETE_SEGMENT_STARTED,
//! 3 DELETE_SEGMENT_FINISHED. Only a segment whose latest state is COPY_SEGMENT_FINISHED is valid,
//! and only if it lies on the partition's current leader-epoch lineage ([`Lineage`]): an upload by
//! a leader whose log was later truncated holds records no consumer ever read.
//!
//! This module parses the records (the Kafka client that fetches them lives in
//! `kappa-connectors`; replay knows no Kafka) and keeps the latest state per segment.
//! Records are read in each metadata partition's offset order; Kafka writes all of one
//! partition's events to one metadata partition, so that order is the events' order.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// The frame version Kafka writes.
const FRAME_VERSION: u64 = 1;
/// Largest element count or byte length believed from a record (bounded again by the bytes left).
const MAX_LEN: usize = 1 << 20;

/// A segment's state in the metadata topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SegmentState {
    /// The upload began.
    CopyStarted,
    /// The upload finished: the segment is valid.
    CopyFinished,
    /// Deletion began: no longer valid.
    DeleteStarted,
    /// Deleted.
    DeleteFinished,
}

impl SegmentState {
    fn from_id(id: i8) -> Option<SegmentState> {
        Some(match id {
            0 => SegmentState::CopyStarted,
            1 => SegmentState::CopyFinished,
            2 => SegmentState::DeleteStarted,
            3 => SegmentState::DeleteFinished,
            _ => return None,
        })
    }

    /// Kafka's id of the state.
    pub fn id(self) -> i8 {
        match self {
            SegmentState::CopyStarted => 0,
            SegmentState::CopyFinished => 1,
            SegmentState::DeleteStarted => 2,
            SegmentState::DeleteFinished => 3,
        }
    }

    /// Kafka's name of the state.
    pub fn name(self) -> &'static str {
        match self {
            SegmentState::CopyStarted => "COPY_SEGMENT_STARTED",
            SegmentState::CopyFinished => "COPY_SEGMENT_FINISHED",
            SegmentState::DeleteStarted => "DELETE_SEGMENT_STARTED",
            SegmentState::DeleteFinished => "DELETE_SEGMENT_FINISHED",
        }
    }
}

/// What the metadata says of one segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSegment {
    /// First offset.
    pub start_offset: i64,
    /// Last offset (inclusive).
    pub end_offset: i64,
    /// Leader epochs of its records: epoch → first offset in the segment.
    pub leader_epochs: BTreeMap<i32, i64>,
    /// The latest state.
    pub state: SegmentState,
}

/// One decoded metadata record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetadataRecord {
    /// apiKey 0: a segment's upload.
    Segment {
        /// Topic.
        topic: String,
        /// The topic's id (a topic deleted and recreated under its name has a new one).
        topic_id: [u8; 16],
        /// Partition.
        partition: i32,
        /// The segment's UUID.
        id: [u8; 16],
        /// What is known of it.
        segment: RemoteSegment,
    },
    /// apiKey 1: a segment's new state.
    Update {
        /// Topic.
        topic: String,
        /// The topic's id.
        topic_id: [u8; 16],
        /// Partition.
        partition: i32,
        /// The segment's UUID.
        id: [u8; 16],
        /// The new state.
        state: SegmentState,
    },
    /// apiKey 2: the partition's remote log is being deleted (state 0 marked, 1 started, 2 finished).
    PartitionDelete {
        /// Topic.
        topic: String,
        /// The topic's id.
        topic_id: [u8; 16],
        /// Partition.
        partition: i32,
        /// The delete state.
        state: i8,
    },
}

/// The latest state of every segment, per topic partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteLogMetadata {
    /// `(topic id, partition)` → segment UUID → segment; ids as Kafka prints them (URL-safe
    /// base64). Keyed by id, not name: a topic deleted and recreated under the same name is
    /// another topic, whose uploads its predecessor's records must not touch.
    pub segments: BTreeMap<(String, i32), BTreeMap<String, RemoteSegment>>,
    /// Partitions (topic id, partition) whose remote log is marked for deletion.
    pub deleted: BTreeMap<(String, i32), i8>,
    /// The topic ids each topic name has had, in the order first seen.
    pub topic_ids: BTreeMap<String, Vec<String>>,
    /// Records read.
    pub records: u64,
    /// Updates for segments never announced (ignored, counted).
    pub orphan_updates: u64,
}

impl RemoteLogMetadata {
    /// Applies one record's value, read at `at` (say `__remote_log_metadata partition 3 offset
    /// 17`, named in errors). Records must come in their partition's offset order.
    pub fn apply(&mut self, at: &str, value: &[u8]) -> Result<()> {
        self.records += 1;
        match decode(at, value)? {
            MetadataRecord::Segment { topic, topic_id, partition, id, segment } => {
                let topic_id = self.seen(topic, &topic_id);
                self.segments.entry((topic_id, partition)).or_default().insert(uuid_string(&id), segment);
            }
            MetadataRecord::Update { topic, topic_id, partition, id, state } => {
                let topic_id = self.seen(topic, &topic_id);
                match self.segments.get_mut(&(topic_id, partition)).and_then(|s| s.get_mut(&uuid_string(&id))) {
                    Some(segment) => segment.state = state,
                    None => self.orphan_updates += 1,
                }
            }
            MetadataRecord::PartitionDelete { topic, topic_id, partition, state } => {
                let topic_id = self.seen(topic, &topic_id);
                self.deleted.insert((topic_id, partition), state);
            }
        }
        Ok(())
    }

    fn seen(&mut self, topic: String, topic_id: &[u8; 16]) -> String {
        let id = uuid_string(topic_id);
        let ids = self.topic_ids.entry(topic).or_default();
        if !ids.contains(&id) {
            ids.push(id.clone());
        }
        id
    }

    /// The segments of one partition of the topic with id `topic_id` (Kafka's spelling), by UUID.
    pub fn partition(&self, topic_id: &str, partition: i32) -> Option<&BTreeMap<String, RemoteSegment>> {
        self.segments.get(&(topic_id.to_string(), partition))
    }

    /// Whether partition `partition` of the topic with id `topic_id` is being deleted.
    pub fn is_deleted(&self, topic_id: &str, partition: i32) -> bool {
        self.deleted.contains_key(&(topic_id.to_string(), partition))
    }
}

/// Kafka's spelling of a UUID: URL-safe base64 of its 16 bytes, without padding (22 characters).
pub fn uuid_string(id: &[u8; 16]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(22);
    for group in id.chunks(3) {
        let n = group.iter().enumerate().fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..=group.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// A cursor over one record's value; every error names the record and the byte.
struct Reader<'a> {
    at: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, reason: impl Into<String>) -> Error {
        Error::CorruptMetadata { object: self.at.to_string(), byte_offset: self.pos as u64, reason: reason.into() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.error(format!("{n} bytes needed, {} left", self.bytes.len() - self.pos)));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn uvarint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.error("varint longer than 10 bytes"))
    }

    fn i8(&mut self) -> Result<i8> {
        Ok(self.take(1)?[0] as i8)
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    fn uuid(&mut self) -> Result<[u8; 16]> {
        Ok(self.take(16)?.try_into().expect("16 bytes"))
    }

    /// A compact length: `n + 1` as an unsigned varint, 0 for null.
    fn compact_len(&mut self) -> Result<Option<usize>> {
        match self.uvarint()? {
            0 => Ok(None),
            n => {
                let n = usize::try_from(n - 1).ok().filter(|&n| n <= MAX_LEN.min(self.bytes.len() - self.pos));
                n.map(Some).ok_or_else(|| self.error("a length longer than the record"))
            }
        }
    }

    fn string(&mut self) -> Result<String> {
        let Some(n) = self.compact_len()? else { return Err(self.error("a null string where a topic name belongs")) };
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.error("a string that is not UTF-8"))
    }

    fn nullable_bytes(&mut self) -> Result<()> {
        if let Some(n) = self.compact_len()? {
            self.take(n)?;
        }
        Ok(())
    }

    /// Skips a tagged-field section.
    fn tagged_fields(&mut self) -> Result<()> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?; // tag
            let size = self.uvarint()?;
            let size = usize::try_from(size).map_err(|_| self.error("tagged field too long"))?;
            self.take(size)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<SegmentState> {
        let id = self.i8()?;
        SegmentState::from_id(id).ok_or_else(|| self.error(format!("unknown segment state {id}")))
    }

    /// `TopicIdPartition`: name, topic id, partition, tagged fields.
    fn topic_partition(&mut self) -> Result<(String, [u8; 16], i32)> {
        let topic = self.string()?;
        let topic_id = self.uuid()?;
        let partition = self.i32()?;
        self.tagged_fields()?;
        Ok((topic, topic_id, partition))
    }

    /// `RemoteLogSegmentId`: topic partition, segment UUID, tagged fields.
    fn segment_id(&mut self) -> Result<(String, [u8; 16], i32, [u8; 16])> {
        let (topic, topic_id, partition) = self.topic_partition()?;
        let id = self.uuid()?;
        self.tagged_fields()?;
        Ok((topic, topic_id, partition, id))
    }
}

/// Decodes one record's value (see the module documentation); `at` names it in errors.
pub fn decode(at: &str, value: &[u8]) -> Result<MetadataRecord> {
    let mut r = Reader { at, bytes: value, pos: 0 };
    let frame = r.uvarint()?;
    if frame != FRAME_VERSION {
        return Err(Error::UnsupportedFormat {
            object: at.to_string(),
            byte_offset: 0,
            what: format!("remote log metadata frame version {frame} (this build reads {FRAME_VERSION})"),
        });
    }
    let api_key = r.uvarint()?;
    let version = r.uvarint()?;
    if version > 1 {
        return Err(Error::UnsupportedFormat {
            object: at.to_string(),
            byte_offset: r.pos as u64,
            what: format!("remote log metadata record apiKey {api_key} version {version} (this build reads 0 and 1)"),
        });
    }
    let record = match api_key {
        0 => {
            let (topic, topic_id, partition, id) = r.segment_id()?;
            let start_offset = r.i64()?;
            let end_offset = r.i64()?;
            r.i32()?; // broker id
            r.i64()?; // max timestamp
            r.i64()?; // event timestamp
            let count = r.compact_len()?.ok_or_else(|| r.error("null leader epochs"))?;
            let mut leader_epochs = BTreeMap::new();
            for _ in 0..count {
                let epoch = r.i32()?;
                let offset = r.i64()?;
                r.tagged_fields()?;
                leader_epochs.insert(epoch, offset);
            }
            r.i32()?; // size in bytes
            r.nullable_bytes()?; // custom metadata
            let state = r.state()?;
            r.tagged_fields()?;
            if end_offset < start_offset {
                return Err(r.error(format!("segment ends at {end_offset}, before it starts at {start_offset}")));
            }
            MetadataRecord::Segment {
                topic,
                topic_id,
                partition,
                id,
                segment: RemoteSegment { start_offset, end_offset, leader_epochs, state },
            }
        }
        1 => {
            let (topic, topic_id, partition, id) = r.segment_id()?;
            r.i32()?; // broker id
            r.i64()?; // event timestamp
            r.nullable_bytes()?; // custom metadata
            let state = r.state()?;
            r.tagged_fields()?;
            MetadataRecord::Update { topic, topic_id, partition, id, state }
        }
        2 => {
            let (topic, topic_id, partition) = r.topic_partition()?;
            r.i32()?; // broker id
            r.i64()?; // event timestamp
            let state = r.i8()?;
            r.tagged_fields()?;
            MetadataRecord::PartitionDelete { topic, topic_id, partition, state }
        }
        other => {
            return Err(Error::UnsupportedFormat {
                object: at.to_string(),
                byte_offset: 0,
                what: format!("remote log metadata apiKey {other}"),
            })
        }
    };
    if r.pos != value.len() {
        return Err(r.error(format!("{} bytes after the record", value.len() - r.pos)));
    }
    Ok(record)
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Encodes a record as a broker writes it (version 0, no tagged fields): for tests and fixtures.
pub fn encode(record: &MetadataRecord) -> Vec<u8> {
    let mut out = Vec::new();
    let topic_partition = |out: &mut Vec<u8>, topic: &str, topic_id: &[u8; 16], partition: i32| {
        put_uvarint(out, topic.len() as u64 + 1);
        out.extend_from_slice(topic.as_bytes());
        out.extend_from_slice(topic_id);
        out.extend_from_slice(&partition.to_be_bytes());
        out.push(0);
    };
    put_uvarint(&mut out, FRAME_VERSION);
    match record {
        MetadataRecord::Segment { topic, topic_id, partition, id, segment } => {
            put_uvarint(&mut out, 0);
            put_uvarint(&mut out, 0);
            topic_partition(&mut out, topic, topic_id, *partition);
            out.extend_from_slice(id);
            out.push(0);
            out.extend_from_slice(&segment.start_offset.to_be_bytes());
            out.extend_from_slice(&segment.end_offset.to_be_bytes());
            out.extend_from_slice(&0i32.to_be_bytes());
            out.extend_from_slice(&0i64.to_be_bytes());
            out.extend_from_slice(&0i64.to_be_bytes());
            put_uvarint(&mut out, segment.leader_epochs.len() as u64 + 1);
            for (epoch, offset) in &segment.leader_epochs {
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.push(0);
            }
            out.extend_from_slice(&0i32.to_be_bytes());
            out.push(0); // custom metadata: null
            out.push(segment.state.id() as u8);
            out.push(0);
        }
        MetadataRecord::Update { topic, topic_id, partition, id, state } => {
            put_uvarint(&mut out, 1);
            put_uvarint(&mut out, 0);
            topic_partition(&mut out, topic, topic_id, *partition);
            out.extend_from_slice(id);
            out.push(0);
            out.extend_from_slice(&0i32.to_be_bytes());
            out.extend_from_slice(&0i64.to_be_bytes());
            out.push(0);
            out.push(state.id() as u8);
            out.push(0);
        }
        MetadataRecord::PartitionDelete { topic, topic_id, partition, state } => {
            put_uvarint(&mut out, 2);
            put_uvarint(&mut out, 0);
            topic_partition(&mut out, topic, topic_id, *partition);
            out.extend_from_slice(&0i32.to_be_bytes());
            out.extend_from_slice(&0i64.to_be_bytes());
            out.push(*state as u8);
            out.push(0);
        }
    }
    out
}

/// A partition's leader-epoch lineage: epoch → its first offset, as the leader's epoch cache (and
/// the leader-epoch checkpoint uploaded with each segment) has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lineage(pub BTreeMap<i32, i64>);

impl Lineage {
    /// Parses a leader-epoch checkpoint (`0`, a count, then `epoch offset` lines); `object`
    /// names it in errors.
    pub fn parse_checkpoint(object: &str, bytes: &[u8]) -> Result<Lineage> {
        let error = |line: usize, reason: String| Error::CorruptMetadata {
            object: object.to_string(),
            byte_offset: bytes.split(|&b| b == b'\n').take(line).map(|l| l.len() as u64 + 1).sum(),
            reason,
        };
        let text =
            std::str::from_utf8(bytes).map_err(|_| error(0, "a leader-epoch checkpoint that is not text".into()))?;
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some("0") {
            return Err(error(0, "a leader-epoch checkpoint of a version other than 0".into()));
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| error(1, "no entry count in the leader-epoch checkpoint".into()))?;
        let mut out = BTreeMap::new();
        for i in 0..count {
            let line = lines.next().ok_or_else(|| error(2 + i, format!("{count} entries announced, {i} found")))?;
            let mut fields = line.split_whitespace();
            let (Some(Ok(epoch)), Some(Ok(offset)), None) =
                (fields.next().map(str::parse::<i32>), fields.next().map(str::parse::<i64>), fields.next())
            else {
                return Err(error(2 + i, format!("`{line}` is not an epoch and an offset")));
            };
            out.insert(epoch, offset);
        }
        Ok(Lineage(out))
    }

    /// Why a segment with these leader epochs and last offset is not on this lineage, if it is
    /// not: each of its epochs must start where the lineage's does (its first may start later, the
    /// segment beginning in the middle of it), and its records of each epoch must end before the
    /// lineage's next epoch begins. A segment with no epochs cannot be checked and passes.
    pub fn diverges(&self, epochs: &BTreeMap<i32, i64>, end_offset: i64) -> Option<String> {
        let list: Vec<(i32, i64)> = epochs.iter().map(|(&e, &o)| (e, o)).collect();
        for (i, &(epoch, start)) in list.iter().enumerate() {
            let Some(&lineage_start) = self.0.get(&epoch) else {
                return Some(format!("leader epoch {epoch} is not on the lineage"));
            };
            if (i == 0 && lineage_start > start) || (i > 0 && lineage_start != start) {
                return Some(format!("leader epoch {epoch} starts at {start}, on the lineage at {lineage_start}"));
            }
            // Where this epoch's records end in the segment, and where the lineage's epoch ends.
            let ends = list.get(i + 1).map_or(end_offset, |&(_, next)| next.saturating_sub(1));
            let later = (std::ops::Bound::Excluded(epoch), std::ops::Bound::Unbounded);
            if let Some((_, &next_start)) = self.0.range(later).next() {
                if ends >= next_start {
                    return Some(format!(
                        "its records of leader epoch {epoch} run to {ends}, past the lineage's next epoch at {next_start}"
                    ));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segment(start: i64, end: i64, epochs: &[(i32, i64)], state: SegmentState) -> RemoteSegment {
        RemoteSegment { start_offset: start, end_offset: end, leader_epochs: epochs.iter().copied().collect(), state }
    }

    #[test]
    fn records_round_trip_and_the_latest_state_wins() {
        let id = [3u8; 16];
        let announce = MetadataRecord::Segment {
            topic: "t".into(),
            topic_id: [1; 16],
            partition: 2,
            id,
            segment: segment(100, 199, &[(3, 50), (4, 150)], SegmentState::CopyStarted),
        };
        let finish = MetadataRecord::Update {
            topic: "t".into(),
            topic_id: [1; 16],
            partition: 2,
            id,
            state: SegmentState::CopyFinished,
        };
        for record in [&announce, &finish] {
            assert_eq!(&decode("r", &encode(record)).expect("decodes"), record);
        }
        let mut metadata = RemoteLogMetadata::default();
        metadata.apply("r0", &encode(&announce)).expect("applies");
        metadata.apply("r1", &encode(&finish)).expect("applies");
        let listed = metadata.partition(&uuid_string(&[1; 16]), 2).expect("the partition");
        assert_eq!(listed[&uuid_string(&id)].state, SegmentState::CopyFinished);
        assert_eq!(uuid_string(&[0u8; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
        let other = MetadataRecord::Update {
            topic: "t".into(),
            topic_id: [1; 16],
            partition: 2,
            id: [9; 16],
            state: SegmentState::DeleteStarted,
        };
        metadata.apply("r2", &encode(&other)).expect("applies");
        assert_eq!(metadata.orphan_updates, 1);
        // The same name, another topic id (deleted and recreated): its records touch only it.
        let recreated = MetadataRecord::Update {
            topic: "t".into(),
            topic_id: [2; 16],
            partition: 2,
            id,
            state: SegmentState::DeleteStarted,
        };
        metadata.apply("r3", &encode(&recreated)).expect("applies");
        assert_eq!(
            metadata.orphan_updates, 2,
            "an update for the old topic's segment id under the new topic id is an orphan"
        );
        let delete = MetadataRecord::PartitionDelete { topic: "t".into(), topic_id: [2; 16], partition: 2, state: 0 };
        metadata.apply("r4", &encode(&delete)).expect("applies");
        assert!(metadata.is_deleted(&uuid_string(&[2; 16]), 2));
        assert!(!metadata.is_deleted(&uuid_string(&[1; 16]), 2), "the other topic id's partition is not deleted");
        assert_eq!(
            metadata.partition(&uuid_string(&[1; 16]), 2).expect("kept")[&uuid_string(&id)].state,
            SegmentState::CopyFinished
        );
        assert_eq!(metadata.topic_ids["t"], vec![uuid_string(&[1; 16]), uuid_string(&[2; 16])]);
    }

    #[test]
    fn tagged_fields_a_newer_broker_adds_are_skipped() {
        let id = [3u8; 16];
        let records = [
            MetadataRecord::Segment {
                topic: "t".into(),
                topic_id: [1; 16],
                partition: 2,
                id,
                segment: segment(100, 199, &[(3, 50)], SegmentState::CopyFinished),
            },
            MetadataRecord::Update {
                topic: "t".into(),
                topic_id: [1; 16],
                partition: 2,
                id,
                state: SegmentState::DeleteStarted,
            },
            MetadataRecord::PartitionDelete { topic: "t".into(), topic_id: [1; 16], partition: 2, state: 1 },
        ];
        for record in records {
            let mut bytes = encode(&record);
            // The record's own tagged fields (its last byte, a count of 0): two unknown ones.
            assert_eq!(bytes.pop(), Some(0));
            bytes.extend_from_slice(&[2, 0, 2, 0xab, 0xcd, 5, 0]);
            assert_eq!(decode("r", &bytes).expect("decodes past unknown tagged fields"), record);
            // A tagged field that claims more bytes than the record has is an error naming it.
            let mut cut = encode(&record);
            cut.pop();
            cut.extend_from_slice(&[1, 0, 9, 0xab]);
            assert!(decode("r", &cut).expect_err("too short").to_string().contains("`r`"));
        }
    }

    #[test]
    fn a_truncated_leaders_upload_is_off_the_lineage() {
        let lineage = Lineage::parse_checkpoint("c", b"0\n3\n0 0\n3 50\n4 150\n").expect("parses");
        assert_eq!(lineage.0.len(), 3);
        // The old leader of epoch 3 uploaded up to 199; the new leader's epoch 4 began at 150.
        assert!(lineage.diverges(&[(3, 100)].into(), 199).is_some());
        assert_eq!(lineage.diverges(&[(3, 100)].into(), 149), None);
        assert_eq!(lineage.diverges(&[(3, 100), (4, 150)].into(), 260), None);
        assert!(lineage.diverges(&[(5, 300)].into(), 400).is_some());
        let top = Lineage([(i32::MAX, 0)].into());
        assert_eq!(top.diverges(&[(i32::MAX, 5)].into(), i64::MAX), None, "the largest epoch has no next");
        assert!(lineage.diverges(&[(3, 100), (4, 160)].into(), 260).is_some());
        assert_eq!(lineage.diverges(&BTreeMap::new(), 10), None);
        for bad in [&b"1\n0\n"[..], b"0\n2\n0 0\n", b"0\nx\n", b"0\n1\n0\n"] {
            assert!(matches!(Lineage::parse_checkpoint("c", bad), Err(Error::CorruptMetadata { .. })));
        }
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_fail_with_a_named_error(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            match decode("r", &bytes) {
                Ok(_) => {}
                Err(Error::CorruptMetadata { object, byte_offset, .. } | Error::UnsupportedFormat { object, byte_offset, .. }) => {
                    prop_assert_eq!(object, "r");
                    prop_assert!(byte_offset <= bytes.len() as u64);
                }
                Err(other) => prop_assert!(false, "unexpected error {}", other),
            }
            let _ = Lineage::parse_checkpoint("c", &bytes);
        }

        #[test]
        fn any_damage_to_a_record_fails_with_a_named_error_or_decodes(at in 0usize..200, xor in 1u8.., cut in 0usize..200) {
            let record = encode(&MetadataRecord::Segment {
                topic: "topic".into(), topic_id: [4; 16], partition: 1, id: [1; 16],
                segment: segment(5, 9, &[(0, 5)], SegmentState::CopyFinished),
            });
            let mut damaged = record.clone();
            let at = at % damaged.len();
            damaged[at] ^= xor;
            for bytes in [damaged.clone(), record[..cut.min(record.len() - 1)].to_vec()] {
                match decode("r", &bytes) {
                    Ok(_) => {}
                    Err(Error::CorruptMetadata { .. } | Error::UnsupportedFormat { .. }) => {}
                    Err(other) => prop_assert!(false, "unexpected error {}", other),
                }
            }
        }
    }
}
