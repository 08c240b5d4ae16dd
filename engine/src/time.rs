//! Deterministic dataflow time.
//!
//! A record's dataflow time is its own timestamp (milliseconds), raised to its partition's
//! *watermark*: the largest timestamp seen so far in that partition minus an allowed lateness, or
//! the partition's *floor* if that is higher. The floor only moves by a decision the job recorded
//! durably: an idle partition's watermark advanced by the live source (see [`crate::clock`]). So
//! the assignment reads nothing but the partition's records in offset order plus those recorded
//! decisions, and the same records receive the same times whether they come from an archive or a
//! live broker, on any number of workers, in any batching, on a first run or a restart. This is
//! invariant 1 of the design (`papers/kappa.md`, §3).
//!
//! The watermark is also the least time any *future* record of the partition can receive, which is
//! what lets a worker hold its capability there: every time below it is complete for that partition.
//!
//! Timestamps come from outside and are checked ([`TimeAssigner::check`]): one at or beyond
//! [`MAX_TIMESTAMP_MS`] (year 10000), or one that jumps further ahead of the partition's watermark
//! than the job's bound, is a bad record, not a time: a far-future timestamp would otherwise pin the
//! partition's watermark there and every later record would land at that time.

/// Dataflow time: milliseconds since the Unix epoch.
pub type Time = u64;

/// Timestamps at or beyond this (10000-01-01T00:00:00Z, in ms) are rejected as malformed.
pub const MAX_TIMESTAMP_MS: u64 = 253_402_300_800_000;

/// Assigns times to one partition's records, in offset order.
///
/// ```
/// use kappa_engine::TimeAssigner;
/// let mut t = TimeAssigner::new(5_000);
/// assert_eq!(t.assign(10_000), 10_000);
/// assert_eq!(t.watermark(), 5_000);
/// assert_eq!(t.assign(7_000), 7_000);   // late, but within the allowed lateness
/// assert_eq!(t.assign(1_000), 5_000);   // too late: raised to the watermark
/// assert_eq!(t.assign(20_000), 20_000);
/// assert_eq!(t.watermark(), 15_000);
/// t.advance_to(18_000);                 // a recorded idle decision
/// assert_eq!(t.assign(16_000), 18_000);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeAssigner {
    lateness_ms: u64,
    max_seen: Option<u64>,
    floor: Time,
}

/// Why a record's timestamp is not a time (see [`TimeAssigner::check`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// At or beyond [`MAX_TIMESTAMP_MS`].
    #[error("timestamp {timestamp_ms} ms lies beyond the year 9999")]
    BeyondYear9999 {
        /// The record's timestamp.
        timestamp_ms: u64,
    },
    /// Too far ahead of the partition's watermark.
    #[error(
        "timestamp {timestamp_ms} ms jumps {ahead_ms} ms ahead of its partition's watermark {watermark} ms, more than \
         the allowed {bound_ms} ms (--max-timestamp-jump)"
    )]
    JumpsAhead {
        /// The record's timestamp.
        timestamp_ms: u64,
        /// The partition's watermark plus lateness when the record came.
        watermark: Time,
        /// How far ahead of `watermark + lateness` it lies.
        ahead_ms: u64,
        /// The job's bound.
        bound_ms: u64,
    },
}

impl TimeAssigner {
    /// A fresh assigner for a partition with no records yet.
    pub fn new(lateness_ms: u64) -> Self {
        TimeAssigner { lateness_ms, max_seen: None, floor: 0 }
    }

    /// An assigner that goes on from a saved state (see [`max_seen`](Self::max_seen) and
    /// [`floor`](Self::floor)).
    pub fn resume(lateness_ms: u64, max_seen: Option<u64>, floor: Time) -> Self {
        TimeAssigner { lateness_ms, max_seen, floor }
    }

    /// The largest timestamp seen so far.
    pub fn max_seen(&self) -> Option<u64> {
        self.max_seen
    }

    /// The watermark set by recorded decisions (0 if none).
    pub fn floor(&self) -> Time {
        self.floor
    }

    /// The least time any later record of this partition can receive.
    pub fn watermark(&self) -> Time {
        self.max_seen.map_or(0, |m| m.saturating_sub(self.lateness_ms)).max(self.floor)
    }

    /// Raises the watermark to at least `watermark`: a decision the job has recorded (an idle
    /// partition advanced). Never lowers it.
    pub fn advance_to(&mut self, watermark: Time) {
        self.floor = self.floor.max(watermark);
    }

    /// Whether `timestamp_ms` may become a time: below [`MAX_TIMESTAMP_MS`], and at most
    /// `max_jump_ms` ahead of what the partition could already receive (its watermark plus the
    /// lateness). The first record of a partition is bounded only by the year.
    pub fn check(&self, timestamp_ms: u64, max_jump_ms: u64) -> Result<(), TimestampError> {
        if timestamp_ms >= MAX_TIMESTAMP_MS {
            return Err(TimestampError::BeyondYear9999 { timestamp_ms });
        }
        if self.max_seen.is_none() && self.floor == 0 {
            return Ok(());
        }
        let reach = self.watermark().saturating_add(self.lateness_ms);
        let ahead_ms = timestamp_ms.saturating_sub(reach);
        if ahead_ms > max_jump_ms {
            return Err(TimestampError::JumpsAhead {
                timestamp_ms,
                watermark: self.watermark(),
                ahead_ms,
                bound_ms: max_jump_ms,
            });
        }
        Ok(())
    }

    /// The time of the next record, whose own timestamp is `timestamp_ms`.
    pub fn assign(&mut self, timestamp_ms: u64) -> Time {
        let time = timestamp_ms.max(self.watermark());
        self.max_seen = Some(self.max_seen.map_or(timestamp_ms, |m| m.max(timestamp_ms)));
        time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_never_fall_below_the_watermark_and_the_watermark_never_falls() {
        let mut t = TimeAssigner::new(100);
        let mut last_wm = 0;
        for ts in [500u64, 10, 450, 1_000, 0, 950, 899, 2_000] {
            let wm = t.watermark();
            let time = t.assign(ts);
            assert!(time >= wm && time >= ts);
            assert!(t.watermark() >= last_wm);
            last_wm = t.watermark();
        }
        assert_eq!(t.watermark(), 1_900);
    }

    #[test]
    fn zero_lateness_makes_times_monotone() {
        let mut t = TimeAssigner::new(0);
        let times: Vec<_> = [5u64, 3, 8, 1].iter().map(|&ts| t.assign(ts)).collect();
        assert_eq!(times, vec![5, 5, 8, 8]);
    }

    #[test]
    fn a_far_future_timestamp_is_rejected_instead_of_pinning_the_watermark() {
        let mut t = TimeAssigner::new(1_000);
        t.check(5_000, 60_000).expect("the first record is bounded only by the year");
        t.assign(5_000);
        let err = t.check(u64::MAX, 60_000).expect_err("u64::MAX is no time");
        assert!(matches!(err, TimestampError::BeyondYear9999 { .. }), "{err}");
        let err = t.check(5_000 + 61_001, 60_000).expect_err("jumps too far");
        assert!(err.to_string().contains("--max-timestamp-jump"), "{err}");
        t.check(5_000 + 60_000, 60_000).expect("within the bound");
        assert_eq!(t.watermark(), 4_000, "rejected timestamps leave the watermark alone");
    }

    #[test]
    fn a_recorded_advance_raises_times_and_survives_a_resume() {
        let mut t = TimeAssigner::new(10);
        t.assign(100);
        t.advance_to(500);
        assert_eq!(t.watermark(), 500);
        let mut resumed = TimeAssigner::resume(10, t.max_seen(), t.floor());
        assert_eq!(resumed.assign(200), 500);
        assert_eq!(resumed.assign(700), 700);
        assert_eq!(resumed.watermark(), 690);
    }
}
