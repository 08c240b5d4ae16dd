//! The replay crate's error type.

/// What a caught panic says (its message, when it has one): for errors that replace a panic on
/// damaged bytes.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// Result with replay's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why reading or writing an archive failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes in a segment are damaged.
    #[error("corrupt record batch in object `{object}` at byte offset {byte_offset}: {reason}")]
    CorruptBatch {
        /// The object's key.
        object: String,
        /// Absolute offset of the damaged field in the object.
        byte_offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// Well-formed bytes this build cannot read.
    #[error("unsupported data in object `{object}` at byte offset {byte_offset}: {what}")]
    UnsupportedFormat {
        /// The object's key.
        object: String,
        /// Absolute offset of the field.
        byte_offset: u64,
        /// What is not supported.
        what: String,
    },
    /// A segment's contents disagree with its key or its neighbours.
    #[error("archive inconsistency at object `{object}`: {reason}")]
    Inconsistent {
        /// The object's key.
        object: String,
        /// What disagrees.
        reason: String,
    },
    /// Metadata kept beside the segments (a manifest, an index file) is damaged.
    #[error("corrupt metadata in object `{object}` at byte offset {byte_offset}: {reason}")]
    CorruptMetadata {
        /// The object's key.
        object: String,
        /// Absolute offset of the damaged field in the object (0 when it cannot be placed).
        byte_offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An object's key does not spell what its layout needs (an offset out of range, say).
    #[error("object key `{object}` cannot be read: {reason}")]
    InvalidKey {
        /// The object's key.
        object: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Offsets the archive must hold are in no object: an object in the middle of the archive is
    /// missing, and replaying past it would drop its records silently.
    #[error(
        "archive of topic `{topic}` partition {partition} has a hole: offsets {expected_offset}..{found_offset} are in \
         no object (the next one present is `{object}`); restore the missing object, or archive the topic again into a \
         new archive (kappa archive write)"
    )]
    ArchiveHole {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The first missing offset: where the objects before the hole end.
        expected_offset: i64,
        /// Where the objects go on.
        found_offset: i64,
        /// The object that starts at `found_offset`.
        object: String,
    },
    /// An Iceberg topic's table may have lost records (deleted or upserted rows, dropped invalid
    /// records): replaying it would not be the topic's history.
    #[error(
        "the Iceberg table `{object}` may not hold every record of the topic: {reasons}; replay it as it is with \
         --allow-lossy-table (a warning, and `inspect` says so), or write the topic's table append-only in its raw mode"
    )]
    LossyTable {
        /// The table's metadata file.
        object: String,
        /// What may have lost records.
        reasons: String,
    },
    /// The object store failed (after its own retries).
    #[error("object store request for `{object}` failed; check the archive URL and credentials")]
    ObjectStore {
        /// The object or prefix.
        object: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// The archive URL cannot be used.
    #[error("archive URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The archive holds nothing for the topic.
    #[error("the archive at `{url}` holds no segments of topic `{topic}`; check --topic and --archive")]
    EmptyArchive {
        /// The archive URL.
        url: String,
        /// The topic.
        topic: String,
    },
    /// Continuing live would skip records: the broker no longer has them.
    #[error(
        "archive of topic `{topic}` partition {partition} ends at offset {archive_end}, but the broker's log starts at \
         {log_start}: offsets {archive_end}..{log_start} are in neither; archive the topic more often (kappa archive \
         write) or replay without --then-live"
    )]
    HandoffGap {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The archive's next offset.
        archive_end: i64,
        /// The broker's first available offset.
        log_start: i64,
    },
    /// The archive holds offsets the broker never had: a different or recreated topic.
    #[error(
        "archive of topic `{topic}` partition {partition} ends at offset {archive_end}, past the broker's end \
         {high_watermark}: the archive is not of this topic (was it recreated?)"
    )]
    ArchiveAhead {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The archive's next offset.
        archive_end: i64,
        /// The broker's high watermark.
        high_watermark: i64,
    },
    /// Reading the topic while archiving failed.
    #[error("archiving topic `{topic}` failed while reading it")]
    Consume {
        /// The topic.
        topic: String,
        /// The source's error.
        #[source]
        source: kappa_engine::BoxError,
    },
}
