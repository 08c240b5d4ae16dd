//! Deterministic dataflow time.
//!
//! A record's dataflow time is its own timestamp (milliseconds), raised to its partition's
//! *watermark*: the largest timestamp seen so far in that partition minus an allowed lateness.
//! The assignment reads nothing but the partition's records in offset order, so the same records
//! receive the same times whether they come from an archive or a live broker, on any number of
//! workers, in any batching. This is invariant 1 of the design (`papers/kappa.md`, §3).
//!
//! The watermark is also the least time any *future* record of the partition can receive, which is
//! what lets a worker hold its capability there: every time below it is complete for that partition.

/// Dataflow time: milliseconds since the Unix epoch.
pub type Time = u64;

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
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeAssigner {
    lateness_ms: u64,
    max_seen: Option<u64>,
}

impl TimeAssigner {
    /// A fresh assigner for a partition with no records yet.
    pub fn new(lateness_ms: u64) -> Self {
        TimeAssigner { lateness_ms, max_seen: None }
    }

    /// An assigner that goes on from a saved state (see [`max_seen`](Self::max_seen)).
    pub fn resume(lateness_ms: u64, max_seen: Option<u64>) -> Self {
        TimeAssigner { lateness_ms, max_seen }
    }

    /// The largest timestamp seen so far: all the state there is.
    pub fn max_seen(&self) -> Option<u64> {
        self.max_seen
    }

    /// The least time any later record of this partition can receive.
    pub fn watermark(&self) -> Time {
        self.max_seen.map_or(0, |m| m.saturating_sub(self.lateness_ms))
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
}
