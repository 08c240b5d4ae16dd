//! Why a showcase pipeline's decoder rejects a record.
//!
//! A rejected record is data, not a failure: the engine turns the error's text into the bad
//! record's reason and applies the job's `--on-bad-record` policy. One enum serves every pipeline
//! here, since they read the same kinds of JSON values.

/// A record a pipeline cannot read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record has no value at all (a tombstone).
    #[error("record has no value")]
    NoValue,
    /// The value is not the JSON the input holds. The serde error is the reason itself, so the
    /// message carries it.
    #[error("not a {what}: {reason}")]
    NotJson {
        /// What the input holds ("like event", "payment", ...).
        what: &'static str,
        /// What serde found.
        reason: serde_json::Error,
    },
    /// A field's value is beyond the bound the pipeline's exact arithmetic relies on.
    #[error("{field} {value} exceeds the largest accepted {what}, {max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The bound.
        max: u64,
        /// What the bound is for ("amount in cents", ...).
        what: &'static str,
    },
}

/// Reads a record's value as the JSON `T`, naming `what` it should have been.
pub fn json<T: for<'de> serde::Deserialize<'de>>(
    record: &kappa_engine::Record,
    what: &'static str,
) -> Result<T, DecodeError> {
    let value = record.value.as_deref().ok_or(DecodeError::NoValue)?;
    serde_json::from_slice(value).map_err(|reason| DecodeError::NotJson { what, reason })
}
